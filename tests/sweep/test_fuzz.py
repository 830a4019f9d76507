"""Generated grid files never make `sweep submit` crash: exit 0 or 2 with one line, and nothing written on exit 2."""

import string

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsbench.sweep.cli import main

KEYS = [
    "name",
    "problems",
    "budget",
    "seeds",
    "training",
    "optimizers",
    "resources",
    "store",
    "steps",
    "grid",
    "zip",
    "fixed",
    "lr",
    "momentum",
    "measuring_step_size",
    "sgd",
    "pal",
    "labpal_sgd",
    "sls",
    "digits_mlp",
    "eval_every",
    "batch_size",
    "weight_decay",
    "split",
    "gpus_per_run",
    "time_limit",
    "memory",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(KEYS),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=4),
    ),
    max_leaves=25,
)
documents = st.one_of(
    values.map(lambda value: yaml.safe_dump(value, allow_unicode=True)),
    st.dictionaries(st.sampled_from(KEYS), values, max_size=8).map(yaml.safe_dump),
    st.text(alphabet=string.printable + "äß€😀&*!|>{}[]", max_size=200),
    st.just("a: &x [1, 2]\nb: *x\nname: demo\nproblems: [digits_mlp]\noptimizers: {sgd: {grid: {lr: *x}}}\n"),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=documents)
def test_generated_grids_give_exit_0_or_2_with_one_line_and_write_nothing_on_2(tmp_path, capsys, text):
    grid = tmp_path / "grid.yaml"
    grid.write_text(text, encoding="utf-8")
    root = tmp_path / "runs"
    code = main(["submit", str(grid), "--dry-run", "--root", str(root)])
    captured = capsys.readouterr()
    assert code in (0, 2)
    if code == 2:
        assert len(captured.err.strip().splitlines()) == 1 and captured.out == ""
    assert not root.exists()  # a dry run writes nothing, and neither does a rejected grid
    if code == 2:
        assert main(["submit", str(grid), "--root", str(root)]) == 2
        capsys.readouterr()
        assert not root.exists()
