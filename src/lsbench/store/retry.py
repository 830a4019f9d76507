"""Riding out a database that is briefly unreachable.

Hundreds of workers write to one server; servers restart, fail over or run out of connection slots for a few
seconds. A worker that crashed on the first refused connection would throw away hours of training, so every store
operation is retried with exponential back-off -- which is safe because every store operation is a read or an
idempotent write (see :mod:`lsbench.store.store`). The total wait is bounded (``LSBENCH_STORE_RETRY_SECONDS``,
default 120 s); after it the operation fails with :class:`StoreUnavailable`, whose message names the store by its
redacted URL only.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

DEFAULT_RETRY_SECONDS = 120.0
RETRY_ENV = "LSBENCH_STORE_RETRY_SECONDS"
_FIRST_DELAY = 0.1
_MAX_DELAY = 5.0

_log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


class StoreUnavailable(RuntimeError):
    """The store could not be reached within the retry budget."""


def retry_budget() -> float:
    """Seconds a store operation may keep retrying (from the environment, so a test can shorten it)."""
    return float(os.environ.get(RETRY_ENV, DEFAULT_RETRY_SECONDS))


def is_transient(error: BaseException) -> bool:
    """Connection refused or dropped, server restarting, SQLite busy beyond its timeout: worth another try."""
    if isinstance(error, OperationalError | InterfaceError):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


def retried(method: Callable[P, T]) -> Callable[P, T]:
    """Retry a store method on transient database errors (the method must be idempotent)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        store: Any = args[0]
        deadline = time.monotonic() + retry_budget()
        delay = _FIRST_DELAY
        while True:
            try:
                return method(*args, **kwargs)
            except Exception as error:
                if not is_transient(error):
                    raise
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    summary = store.scrub(str(getattr(error, "orig", error)).splitlines()[0])
                    raise StoreUnavailable(
                        f"store {store.redacted_url} unreachable for {retry_budget():.0f} s ({summary})"
                    ) from None
                _log.warning("store %s: %s; retrying", store.redacted_url, type(error).__name__)
                time.sleep(min(delay * (0.5 + random.random()), remaining))
                delay = min(delay * 2, _MAX_DELAY)

    return wrapper
