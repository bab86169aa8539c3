"""A few seconds' memory for the dashboard's whole-table aggregates (votes per version, answers per day).

At 100,000 interactions the vote tally joins every vote to its answer (tens of milliseconds, more on a busy
machine); a figure on a dashboard may be this old, the pages that act (review, versions) never read from here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")
AGGREGATES_TTL_S = 30.0


class Recent:
    """Values computed at most once per `ttl_s` per key. Thread-safe; a miss computes outside the lock."""

    def __init__(self, ttl_s: float = AGGREGATES_TTL_S) -> None:
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._values: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        now = time.monotonic()
        with self._lock:
            found = self._values.get(key)
        if found is not None and now - found[0] < self._ttl_s:
            value: T = found[1]
            return value
        value = compute()
        with self._lock:
            self._values[key] = (now, value)
        return value
