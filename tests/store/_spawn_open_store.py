"""Run in spawned processes by tests/store/test_schema.py (through runpy, so no test module has to be importable).

Globals given by the parent: URL, NAME, BARRIER (a multiprocessing barrier) and RESULTS (a multiprocessing queue).
Opens the store right after the barrier and reports whether this process ran the migration.
"""

import lsbench.store.store as store_module

_real_upgrade = store_module.upgrade_to_head
_migrated: list[bool] = []


def _recording_upgrade(engine):
    result = _real_upgrade(engine)
    _migrated.append(result)
    return result


store_module.upgrade_to_head = _recording_upgrade

BARRIER.wait(timeout=60)  # noqa: F821 - injected by the parent
with store_module.Store(URL) as store:  # noqa: F821
    store.upsert_sweep(NAME, "h", "t", "/tmp", "local")  # noqa: F821
RESULTS.put((NAME, _migrated[0]))  # noqa: F821
