"""Admin actions (retrain, promote, roll back, import an adapter) for Slack, the CLI and HTTP alike. All audited.

An action that succeeds writes its audit event in its own commit (the new active version, the new run);
a refusal or a failure is audited on its own afterwards, when nothing has changed. Promotions and
rollbacks are also published to the admin notifiers (the Slack admin channel), after the fact.
Store work runs in worker threads (`asyncio.to_thread`): the event loop also acks Slack.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine

from serving.access import AccessPolicy, Role
from serving.adapter_import import AdapterImporter
from serving.api.admin.protocol import AdapterVersionPublic, RunPublic, StatusResponse
from serving.errors import Forbidden, NotFound, TuneloopError
from serving.notify import AdminEvent, AdminEventKind, AdminEvents
from serving.registry import AdapterRegistry, ServedAdapter
from store import adapters as adapter_repo
from store import audit as audit_repo
from store import feedback as feedback_repo
from store import runs as run_repo
from store.audit import AuditEntry
from store.db import session_scope
from store.models import AdapterVersion

log = logging.getLogger(__name__)
T = TypeVar("T")
RUN_POLL_S = 0.25
IMPORT_ACTION = "adapter.import"


class CycleLauncher(Protocol):
    """Starts a tuning cycle in the background and returns its run id (implemented by the composition root).

    `audit` is stored in the same commit as the new run, with the run's id added to its detail.
    """

    async def start(
        self, *, trigger: str, user_id: str | None, force: bool, audit: AuditEntry | None = None
    ) -> int: ...


class AdminService:
    def __init__(
        self,
        *,
        engine: Engine,
        registry: AdapterRegistry,
        access: AccessPolicy,
        launcher: CycleLauncher | None,
        events: AdminEvents | None = None,
        importer: AdapterImporter | None = None,
    ) -> None:
        self._engine = engine
        self._registry = registry
        self._access = access
        self._launcher = launcher
        self._events = events
        self._importer = importer

    async def promote(self, *, version: str, user_id: str, source: str) -> ServedAdapter:
        adapter = await self._audited(
            user_id, source, "promote", version, lambda ok: self._registry.promote(version, audit=ok)
        )
        await self._announce(AdminEventKind.promoted, adapter, actor=user_id, source=source)
        return adapter

    async def rollback(self, *, version: str | None, user_id: str, source: str) -> ServedAdapter:
        adapter = await self._audited(
            user_id, source, "rollback", version, lambda ok: self._registry.rollback(version, audit=ok)
        )
        await self._announce(AdminEventKind.rolled_back, adapter, actor=user_id, source=source)
        return adapter

    async def retrain(self, *, user_id: str, source: str) -> int:
        if self._launcher is None:
            raise TuneloopError("training is not available in this process")
        launcher = self._launcher
        return await self._audited(
            user_id,
            source,
            "retrain",
            None,
            lambda ok: launcher.start(trigger=source, user_id=user_id, force=True, audit=ok),
        )

    async def import_adapter(
        self, *, path: str, version: str | None, user_id: str, source: str
    ) -> AdapterVersionPublic:
        """Register the LoRA folder at `path` (on this host) as `version` (None: the next vNNNN), ready, not active."""
        if self._importer is None:
            raise TuneloopError("importing adapters is not available in this process")
        importer = self._importer
        row = await self._audited(
            user_id,
            source,
            IMPORT_ACTION,
            version,
            lambda ok: asyncio.to_thread(importer.import_folder, path, version=version, audit=ok),
            detail={"source": path},
        )
        return AdapterVersionPublic.from_row(row, active=False)

    def versions(self) -> list[AdapterVersionPublic]:
        with session_scope(self._engine) as session:
            rows = adapter_repo.list_versions(session=session)
        active = self._registry.active.version
        return [AdapterVersionPublic.from_row(row, active=row.version == active) for row in rows]

    def status(self) -> StatusResponse:
        with session_scope(self._engine) as session:
            runs = run_repo.list_runs(session=session, limit=1)
            last_trained = run_repo.last_finished_run(session=session)
            since = last_trained.started_at if last_trained else None
            new_feedback = feedback_repo.count_new_feedback(session=session, since=since)
        return StatusResponse(
            active_adapter=self._registry.active.version,
            loaded_adapters=self._registry.loaded_versions,
            last_run=RunPublic.from_row(runs[0]) if runs else None,
            new_feedback_since_last_training=new_feedback,
            access=self._access.mode,
        )

    def run(self, run_id: int) -> RunPublic:
        with session_scope(self._engine) as session:
            run = run_repo.get_run(session=session, run_id=run_id)
        if run is None:
            raise NotFound(f"run {run_id} does not exist", hint="List runs with `tuneloop runs`.")
        return RunPublic.from_row(run)

    async def wait_for_run(self, run_id: int, *, timeout_s: float | None, poll_s: float = RUN_POLL_S) -> RunPublic:
        """The run once it has finished, or as it stands after `timeout_s` (None: no limit).

        The one wait loop for the API's long poll and the bot. It polls the store because the cycle may run
        in another process on the same database.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            run = await asyncio.to_thread(self.run, run_id)
            if run.finished or (deadline is not None and time.monotonic() >= deadline):
                return run
            await asyncio.sleep(poll_s)  # the polling interval of a store read, not synchronisation

    def refusal(self, action: str, user_id: str) -> Forbidden | None:
        """The error refusing `action` to `user_id`, or None for an admin. Reads nothing; audits nothing."""
        if self._access.is_admin(user_id):
            return None
        return Forbidden(f"{action} needs an admin; {user_id} is not one", hint=self._access.refusal_hint(Role.admin))

    async def _audited(
        self,
        user_id: str,
        source: str,
        action: str,
        target: str | None,
        call: Callable[[AuditEntry], Awaitable[T]],
        *,
        detail: dict[str, Any] | None = None,
    ) -> T:
        """Run `call` for an admin, handing it the ok-event to store in the action's own commit.

        Failures are audited after the action's transaction was rolled back, and re-raised: a TuneloopError
        with its message, anything else as "unexpected: <type>" (the edge answers it with a reference).
        `detail` goes into every event of the action, whatever its outcome.
        """
        given = detail or {}
        entry = AuditEntry(actor=user_id, source=source, action=action, target=target, detail=given)
        refused = self.refusal(action, user_id)
        if refused is not None:
            await asyncio.to_thread(
                self._audit, replace(entry, outcome="refused", detail={**given, "reason": "not an admin"})
            )
            raise refused
        try:
            result = await call(entry)
        except TuneloopError as error:
            await asyncio.to_thread(
                self._audit_failure, replace(entry, outcome="failed", detail={**given, "error": error.message})
            )
            raise
        except Exception as error:
            await asyncio.to_thread(
                self._audit_failure,
                replace(entry, outcome="failed", detail={**given, "error": f"unexpected: {type(error).__name__}"}),
            )
            raise
        log.info("audit action=%s actor=%s target=%s outcome=ok", action, user_id, target)
        return result

    def _audit(self, entry: AuditEntry) -> None:
        with session_scope(self._engine) as session:
            audit_repo.add_audit(session=session, entry=entry)
            session.commit()
        log.info(
            "audit action=%s actor=%s target=%s outcome=%s", entry.action, entry.actor, entry.target, entry.outcome
        )

    def _audit_failure(self, entry: AuditEntry) -> None:
        """Audit a failed action; if even that fails (the database is down), log it and let the first error through."""
        try:
            self._audit(entry)
        except Exception:
            log.exception("audit.write_failed action=%s actor=%s target=%s", entry.action, entry.actor, entry.target)

    async def _announce(self, kind: AdminEventKind, adapter: ServedAdapter, *, actor: str, source: str) -> None:
        """Publish a swap that has happened; telling admins about it never fails the swap."""
        if self._events is None or not self._events.listened:
            return
        previous = self._registry.previous  # read before anything can await: the swap just made is the last one
        try:
            row = await asyncio.to_thread(self._version_row, adapter.version)
            event = AdminEvent(
                kind=kind,
                actor=actor,
                source=source,
                version=adapter.version,
                previous=previous.version if previous is not None else None,
                run_id=row.run_id if row is not None else None,
                metrics=dict(row.metrics) if row is not None else {},
            )
        except Exception:
            log.exception("notify.not_published kind=%s version=%s", kind, adapter.version)
            return
        self._events.publish(event)

    def _version_row(self, version: str) -> AdapterVersion | None:
        with session_scope(self._engine) as session:
            return adapter_repo.get_version(session=session, version=version)
