"""Where the repository's files are, for tests at any depth of the tree."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRIDS = REPO / "sweeps" / "grids"
CLUSTER = REPO / "cluster"
SLURM_TESTS = REPO / "tests" / "sweep" / "backends" / "slurm"
STAND_IN_BIN = SLURM_TESTS / "bin"  # stand-in apptainer/singularity executables
GOLDEN = SLURM_TESTS / "golden"
