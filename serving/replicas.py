"""Keep this process on the store's active version, wherever the promotion or rollback was made.

Several service processes share one database (and each its vLLM, or a list of them). The store's active
row is the one truth; each process follows it:
- on PostgreSQL it LISTENs on the channel that `store.adapters.mark_active` notifies in its commit, so a
  change arrives as it commits, and it still polls now and then in case the listening connection broke;
- on SQLite (one machine) it polls a one-row read often, which costs well under a millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from sqlalchemy import Engine

from serving.registry import AdapterRegistry
from store.adapters import ACTIVE_CHANNEL

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class FollowSettings:
    # SQLite has no notifications: this is how stale a process may be, at most, plus the load.
    poll_interval_s: float = 0.5
    # With LISTEN/NOTIFY the poll is only a safety net for a dropped listening connection.
    notified_poll_interval_s: float = 5.0
    # How long to wait before listening again after the listening connection failed.
    relisten_after_s: float = 2.0


class ActiveVersionWatcher:
    """Calls `registry.follow_store()` whenever the store's active version may have changed."""

    def __init__(
        self, *, registry: AdapterRegistry, engine: Engine, ready: asyncio.Event, settings: FollowSettings
    ) -> None:
        self._registry = registry
        self._engine = engine
        self._ready = ready
        self._settings = settings
        self._nudge = asyncio.Event()
        self._listening = asyncio.Event()

    @property
    def uses_notifications(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    async def run(self) -> None:
        """Follow the store until cancelled (the service's lifespan owns this task)."""
        listener = asyncio.create_task(self._listen()) if self.uses_notifications else None
        try:
            while True:
                interval = self._settings.poll_interval_s
                if self._listening.is_set():
                    interval = self._settings.notified_poll_interval_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._nudge.wait(), timeout=interval)
                self._nudge.clear()
                if not self._ready.is_set():
                    continue  # the engine is (re)starting; its restore reads the store anyway
                try:
                    await self._registry.follow_store()
                except Exception as error:  # the next nudge or poll tries again; serving goes on meanwhile
                    log.warning("replicas.follow_failed error=%s", type(error).__name__, exc_info=error)
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener

    async def _listen(self) -> None:
        import psycopg  # only PostgreSQL needs it

        url = self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {ACTIVE_CHANNEL}")
                    self._listening.set()
                    self._nudge.set()  # anything committed before LISTEN took effect is read once now
                    async for notice in connection.notifies():
                        log.info("replicas.notified version=%s", notice.payload)
                        self._nudge.set()
            except psycopg.Error as error:
                log.warning("replicas.listen_failed error=%s: polling until it listens again", type(error).__name__)
            self._listening.clear()
            await asyncio.sleep(self._settings.relisten_after_s)  # backing off before reconnecting
