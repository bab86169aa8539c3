"""The one writer of a run's record while its cycle runs: status, stage, counts, metrics, timings and progress.

Every write happens in a worker thread (the loop keeps answering Slack and the API). Progress comes from
synchronous callbacks (the trainer's events, the paraphraser's count): while one progress write is in flight only
the newest value waits, and every other write waits for it first, so a stage change always lands last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine

from store import runs as run_repo
from store.db import session_scope

log = logging.getLogger(__name__)
# The trainer reports every step; the record shows at most one a second (and always the last step).
PROGRESS_INTERVAL_S = 1.0


class RunRecorder:
    def __init__(self, engine: Engine, run_id: int) -> None:
        self._engine = engine
        self.run_id = run_id
        # Seconds per stage, in the order they ran; written with the next change.
        self.timings: dict[str, float] = {}
        self._writer: asyncio.Task[None] | None = None
        self._latest: dict[str, Any] | None = None

    async def set(self, **changes: Any) -> None:
        """Update the record, after any progress write in flight."""
        await self.settle()
        await asyncio.to_thread(self._update, **changes)

    @contextmanager
    def timed(self, stage: str, *, digits: int = 2) -> Iterator[None]:
        """Time a stage into `timings[stage]` (the next `set(timings=...)` stores it)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = round(time.perf_counter() - started, digits)

    def progress(self, progress: dict[str, Any]) -> None:
        """From a synchronous callback on the loop: written in a thread, the newest value wins."""
        self._latest = progress
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_progress())

    def counter(self) -> Callable[[int, int], None]:
        """A `(done, total)` callback that shows a count as progress."""
        return lambda done, total: self.progress({"step": done, "total": total})

    def trainer_events(self) -> Callable[[dict[str, Any]], None]:
        """The trainer's event callback: at most one progress write a second, and always its last step."""
        last = 0.0

        def report(event: dict[str, Any]) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL_S or event.get("step") == event.get("total"):
                last = now
                self.progress({k: v for k, v in event.items() if k != "event"})

        return report

    async def settle(self) -> None:
        """Until the progress write in flight (if any) has landed."""
        if self._writer is not None:
            await self._writer

    def _update(self, **changes: Any) -> None:
        with session_scope(self._engine) as session:
            run_repo.update_run(session=session, run_id=self.run_id, **changes)

    async def _write_progress(self) -> None:
        while self._latest is not None:
            progress, self._latest = self._latest, None
            try:
                await asyncio.to_thread(self._update, progress=progress)
            except Exception:  # progress is for watching a run; failing to show it must not fail the run
                log.exception("cycle.progress_not_stored run=%s", self.run_id)
