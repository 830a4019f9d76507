"""Many concurrent writers, killed writers: nothing lost, nothing twice (the store_throughput benchmark as a test)."""

import pytest
from benchmarks import store_throughput


@pytest.fixture(params=["postgres", "spool"])
def url(request, tmp_path):
    """Postgres written directly, and the cluster path for SQLite: spool files ingested into the file."""
    if request.param == "spool":
        return f"spool+sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


def test_64_writers_lose_nothing_and_write_nothing_twice(url):
    outcome = store_throughput.run(url, writers=64, rows=500)
    assert (outcome.lost, outcome.duplicated, outcome.errors) == (0, 0, 0)
    assert outcome.completed_attempts_per_run == (1,) * 64


def test_killed_and_restarted_writers_leave_one_copy_and_one_completed_attempt(url):
    outcome = store_throughput.run(url, writers=16, rows=300, kill=8, seed=3)
    assert (outcome.lost, outcome.duplicated, outcome.errors) == (0, 0, 0)
    assert outcome.completed_attempts_per_run == (1,) * 16
