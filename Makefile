# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create or refresh .venv; the stamp file makes the refresh cheap when nothing changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lsbench-installed
# The development machines carry these builds on disk; a cluster install uses pyproject's ranges instead.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint bench reproduce venv cluster-up cluster-down

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The main job on the embedded default: the demo grid on the local pool with a SQLite store, then its summary and its
# report (the last line printed is the path of index.html).
demo: $(STAMP)
	$(PY) -m lsbench sweep submit grids/demo_digits.yaml --wait
	$(PY) -m lsbench sweep aggregate demo_digits
	$(PY) -m lsbench sweep report demo_digits

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks reproduction
	$(PY) -m ruff format --check src tests benchmarks reproduction

# The Slurm tests (marked slurm, under tests/sweep/backends/slurm) need the single-node test cluster: start it
# (installing its Debian packages if missing; needs root) and chromium for the report's browser test, run the whole
# suite, and stop the cluster again whatever the tests did.
test: lint
	bash tests/report/browser/install-chromium.sh
	bash cluster/testing/start.sh
	LSBENCH_REQUIRE_SLURM=1 $(PY) -m pytest -q; status=$$?; bash cluster/testing/stop.sh; exit $$status

bench: $(STAMP)
	$(PY) benchmarks/optim_overhead.py
	$(PY) benchmarks/plan_expansion.py
	$(PY) benchmarks/aggregate_store.py
	$(PY) benchmarks/report_store.py

# Small-scale reproductions of the thesis' claims on the CPU (local pool, SQLite under reproduction/runs/), judged
# and written to REPRODUCTION.md; an interrupted run continues where it stopped (see reproduction/reproduce.py).
reproduce: $(STAMP)
	$(PY) reproduction/reproduce.py

# The test cluster on its own (e.g. to run `pytest -m slurm` repeatedly); see cluster/testing/start.sh.
cluster-up:
	bash cluster/testing/start.sh

cluster-down:
	bash cluster/testing/stop.sh
