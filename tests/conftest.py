"""Settings shared by the whole test suite."""

from collections.abc import Iterator

import pytest
import torch

SLURM_FIXTURE = "slurm_cluster"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the Slurm test cluster, so `-m "not slurm"` deselects them and the summary can
    count them."""
    for item in items:
        if SLURM_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say loudly when the Slurm tests did not run: a green run without them says nothing about the Slurm backend."""
    skipped = [
        report for report in terminalreporter.stats.get("skipped", []) if "slurm" in getattr(report, "keywords", {})
    ]
    if skipped:
        reason = skipped[0].longrepr[2] if isinstance(skipped[0].longrepr, tuple) else "skipped"
        terminalreporter.write_sep("!", f"{len(skipped)} Slurm tests did NOT run", red=True, bold=True)
        terminalreporter.write_line(f"{reason.removeprefix('Skipped: ')}; `make test` (as root) runs them.")


@pytest.fixture(autouse=True, scope="session")
def one_intra_op_thread() -> Iterator[None]:
    """Run every test on one intra-op thread.

    The models in tests are tiny, so extra threads buy nothing, while on a shared CPU competing OpenMP threads
    made small training tests 10-50x slower. One thread also makes in-process runs split their kernels like the
    subprocesses the resume tests start with OMP_NUM_THREADS=1, which bitwise comparisons between them need.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The base URL of a throw-away Postgres server on loopback (started here unless `make test` did)."""
    from tests.services.postgres import server_url, stop_server

    url, started = server_url()
    yield url
    if started:
        stop_server()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty Postgres database for one test."""
    from tests.services.postgres import fresh_database

    with fresh_database(postgres_server) as url:
        yield url
