"""Telling admins what changed: promotions, rollbacks, rejected candidates and failed cycles.

The admin service and the tuning cycle publish an `AdminEvent` to `AdminEvents`; the notifiers attached
to it (the Slack admin channel, implemented in bot/) deliver it. Delivery runs in the background and its
failures are logged: a channel that is slow or down never delays or fails the action it reports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

log = logging.getLogger(__name__)


class AdminEventKind(StrEnum):
    promoted = "promoted"  # a version now serves (by the cycle, or by a person)
    rolled_back = "rolled_back"  # a person made an earlier version serve again
    rejected = "rejected"  # the gate kept the active version; the candidate will not serve
    cycle_failed = "cycle_failed"  # a tuning cycle stopped with an error; the active version keeps serving


@dataclass(frozen=True, kw_only=True)
class AdminEvent:
    kind: AdminEventKind
    actor: str  # the user id, or "tuneloop" for the cycle's own decisions
    source: str  # slack, api, cli, or cycle
    version: str | None  # the version promoted, rolled back to, rejected, or being trained (None: none yet)
    previous: str | None = None  # promotions and rollbacks: the version that served before (the Roll back target)
    run_id: int | None = None
    trigger: str | None = None  # the run's trigger (nightly, api, slack, cli)
    triggered_by: str | None = None  # who started the run, when a person did
    reason: str | None = None  # why the gate rejected the candidate, or why the cycle failed
    metrics: Mapping[str, Any] = field(default_factory=dict)  # the version's metrics: gate scores, training loss


class AdminNotifier(Protocol):
    async def notify(self, event: AdminEvent) -> None: ...


class AdminEvents:
    """Hands each event to every attached notifier, in background tasks whose failures are only logged."""

    def __init__(self) -> None:
        self._notifiers: list[AdminNotifier] = []
        self._pending: set[asyncio.Task[None]] = set()

    def attach(self, notifier: AdminNotifier) -> None:
        self._notifiers.append(notifier)

    @property
    def listened(self) -> bool:
        return bool(self._notifiers)

    def publish(self, event: AdminEvent) -> None:
        if not self._notifiers:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("notify.dropped kind=%s version=%s: no event loop to deliver it", event.kind, event.version)
            return
        for notifier in self._notifiers:
            task = loop.create_task(self._deliver(notifier, event))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def wait_idle(self) -> None:
        """Wait until every event published so far was delivered or given up (for shutdown and tests)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _deliver(self, notifier: AdminNotifier, event: AdminEvent) -> None:
        try:
            await notifier.notify(event)
        except Exception:  # a notice is best effort: the action it reports has already happened
            log.exception("notify.failed kind=%s version=%s run=%s", event.kind, event.version, event.run_id)
