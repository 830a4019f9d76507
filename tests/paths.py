"""Where the repository's files are, for tests at any depth of the tree."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "lsbench"
# The thesis grids and cluster profiles ship with the package; sweeps/grids and cluster/*.yaml link to them.
GRIDS = PACKAGE / "sweep" / "grids"
PROFILES = PACKAGE / "sweep" / "profiles"
CLUSTER = REPO / "cluster"  # the test cluster's scripts (cluster/testing/) and the links to the profiles
SLURM_TESTS = REPO / "tests" / "sweep" / "backends" / "slurm"
STAND_IN_BIN = SLURM_TESTS / "bin"  # stand-in apptainer/singularity executables
GOLDEN = SLURM_TESTS / "golden"
