"""lsbench as installed from its wheel (not editable), used from a directory outside the checkout: the shipped
profiles and thesis grids come with the package.

The wheel is built from a copy of the checkout's package files without build isolation and installed with
``--no-deps`` into a fresh virtual environment, which borrows the test environment's site-packages (torch and the
rest) through a ``.pth`` file, so nothing is downloaded and the checkout's own ``src/`` is never on the path.
"""

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
from tests import paths


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """(the venv's bin directory, a working directory outside the checkout, the environment to run in)."""
    base = tmp_path_factory.mktemp("installed")
    source = base / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    # jobs/ and containers/: the packaged job entry and container definition are links into them.
    for folder in ("src", "jobs", "containers"):
        shutil.copytree(paths.REPO / folder, source / folder, symlinks=True, ignore=ignore)
    for file in ("pyproject.toml", "README.md"):
        shutil.copy2(paths.REPO / file, source / file)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    built = run(*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", base / "dist", source, cwd=base)
    assert built.returncode == 0, built.stderr
    (wheel,) = (base / "dist").glob("lsbench-*.whl")

    venv = base / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=base).returncode == 0
    python = venv / "bin" / "python"
    done = run(*pip, "--python", python, "install", "--no-deps", "--no-index", wheel, cwd=base)
    assert done.returncode == 0, done.stderr
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=base).stdout.strip()
    # The dependencies of the test environment (its site-packages only: not the checkout's src/).
    Path(purelib, "zz-test-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    work = base / "elsewhere"
    work.mkdir()
    env = {
        name: value for name, value in os.environ.items() if not name.startswith(("LSBENCH_", "PYTHON", "VIRTUAL_ENV"))
    }
    env |= {"HOME": str(base / "home"), "OMP_NUM_THREADS": "1", "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"}
    where = run(python, "-c", "import lsbench; print(lsbench.__file__)", cwd=work, env=env)
    assert where.stdout.startswith(purelib), where  # the wheel's copy, not the checkout's
    return venv / "bin", work, env


def test_dry_run_of_a_shipped_grid_on_a_shipped_profile_names_its_gpu(installed):
    bin_dir, work, env = installed
    done = run(
        bin_dir / "sweep", "submit", "grids/pal_cifar10.yaml", "--profile", "tcml", "--dry-run", cwd=work, env=env
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("sweep pal_cifar10: 1,128 runs")
    assert "4 x NVIDIA GeForce GTX 1080 (8 GB) per node" in lines[1]
    assert "site-packages/lsbench/sweep/profiles/tcml.yaml" in lines[1]
    # Neither the image nor the data exists yet here: warnings in a dry run.
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert any("image:" in line for line in warnings) and any("CIFAR-10" in line for line in warnings)


def test_a_broken_profile_given_by_path_is_one_line_and_exit_2(installed):
    bin_dir, work, env = installed
    (work / "mine.yaml").write_text("backend: slurm\nimage: /x.sif\nmax_requeues: lots\n")
    done = run(
        bin_dir / "sweep", "submit", "grids/pal_cifar10.yaml", "--profile", "mine.yaml", "--dry-run", cwd=work, env=env
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "sweep: error: mine.yaml: max_requeues: must be an integer in [0, 1000], not 'lots'"
    ]


def test_profiles_lists_the_shipped_ones(installed):
    bin_dir, work, env = installed
    done = run(bin_dir / "sweep", "profiles", cwd=work, env=env)
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines() if not line.startswith(" ")]
    assert names == ["local", "tcml", "testing"]
    assert "shipped" in done.stdout


def test_lsbench_data_check_runs_installed(installed):
    bin_dir, work, env = installed
    done = run(bin_dir / "lsbench", "data", "check", "cifar10", "digits", cwd=work, env=env)
    assert done.returncode == 1  # CIFAR-10 is not in the (empty) default data directory
    assert f"data directory: {env['HOME']}/.lsbench/data" in done.stdout and "digits" in done.stdout


def test_image_check_lints_the_shipped_definition_and_build_asks_for_a_checkout(installed):
    bin_dir, work, env = installed
    checked = run(bin_dir / "sweep", "image", "check", cwd=work, env=env)
    assert checked.returncode == 0, checked.stderr
    assert "site-packages/lsbench/sweep/container/lsbench.def: ok" in checked.stdout
    built = run(bin_dir / "sweep", "image", "build", "--dry-run", cwd=work, env=env)
    assert built.returncode == 2 and built.stdout == ""
    assert len(built.stderr.splitlines()) == 1 and "needs a checkout of lsbench" in built.stderr
