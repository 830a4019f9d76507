"""Where a sweep keeps its state on disk, and the small files that describe it.

Everything a worker needs to find and train its run lives in the sweep directory, so a worker started inside a
container, on another node or after a requeue needs only that directory and its array index -- no pickled host
objects cross the boundary:

    <root>/<sweep>/
        sweep.json      name, grid hash, store URL (password redacted), backend
        .store-url      the full store URL, only when it holds a password (readable by the owner only)
        grid.yaml       the grid as last submitted
        plan.json       the run specs, indexed by the sweep's append-only run index
        store.sqlite    the default store (when the grid names none)
        runs/<run_id>/  checkpoints, result.json, metrics.jsonl, final_model.pt
        logs/<run_id>.log   one log per run, appended by every attempt
        reports/        aggregate tables (summary.md, summary.csv, summary.tex)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsbench.files import atomic_write_text

if TYPE_CHECKING:
    from lsbench.sweep.plan import RunSpec

# A sweep name becomes a directory name and appears in batch scripts: no separators, no shell metacharacters.
SWEEP_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DEFAULT_ROOT = "runs"
CREDENTIALS_FILE = ".store-url"
ROOT_ENV = "LSBENCH_ROOT"


def sweep_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding all sweeps: ``root``, else ``$LSBENCH_ROOT``, else ``./runs``."""
    return Path(root if root is not None else os.environ.get(ROOT_ENV, DEFAULT_ROOT))


@dataclass(frozen=True)
class SweepDir:
    """Paths and files of one sweep directory."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def meta_file(self) -> Path:
        return self.path / "sweep.json"

    @property
    def plan_file(self) -> Path:
        return self.path / "plan.json"

    @property
    def grid_file(self) -> Path:
        return self.path / "grid.yaml"

    @property
    def reports(self) -> Path:
        return self.path / "reports"

    def run_dir(self, run_id: str) -> Path:
        return self.path / "runs" / run_id

    def log_file(self, run_id: str) -> Path:
        return self.path / "logs" / f"{run_id}.log"

    def default_store_url(self) -> str:
        return f"sqlite:///{(self.path / 'store.sqlite').resolve()}"

    def exists(self) -> bool:
        return self.meta_file.is_file()

    # -- sweep.json -----------------------------------------------------------------------------------------

    def read_meta(self) -> dict[str, Any]:
        return json.loads(self.meta_file.read_text())

    def write_meta(self, meta: dict[str, Any]) -> None:
        _write_json(self.meta_file, meta)

    @property
    def credentials_file(self) -> Path:
        return self.path / CREDENTIALS_FILE

    def store_url(self) -> str:
        """The full store URL: from the owner-only credentials file if the URL has a password, else sweep.json."""
        if self.credentials_file.is_file():
            return self.credentials_file.read_text().strip()
        return self.read_meta()["store"]

    def keep_store_url(self, url: str) -> str:
        """Record where the full ``url`` is found; return the form that may be shown and written anywhere.

        A password never goes into sweep.json, logs or batch scripts: a URL with one is kept in a file readable by
        its owner only (like ~/.pgpass), and everything else sees the URL with the password as ``***``.
        """
        from lsbench.store import redact_url  # the store package is light, but only submit needs it

        shown = redact_url(url)
        if shown == url:
            self.credentials_file.unlink(missing_ok=True)
        else:
            atomic_write_text(self.credentials_file, url + "\n", mode=0o600)
        return shown

    # -- plan.json ------------------------------------------------------------------------------------------

    def read_plan(self) -> list[RunSpec]:
        from lsbench.sweep.plan import RunSpec  # the registries behind it import torch; status commands do not

        if not self.plan_file.is_file():
            return []
        return [RunSpec.from_dict(entry) for entry in json.loads(self.plan_file.read_text())]

    def write_plan(self, specs: list[RunSpec]) -> None:
        _write_json(self.plan_file, [spec.to_dict() for spec in specs])

    def run_spec(self, index: int) -> RunSpec:
        plan = self.read_plan()
        if not 0 <= index < len(plan):
            raise IndexError(f"{self.plan_file}: no run with index {index} (the plan has {len(plan)})")
        return plan[index]


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(value, indent=1, sort_keys=True) + "\n")
