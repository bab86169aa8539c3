"""Admin actions (retrain, promote, roll back) for Slack, the CLI and HTTP alike. Every call is audited."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine

from serving.access import AccessPolicy, Role
from serving.api.admin.protocol import AdapterVersionPublic, RunPublic, StatusResponse
from serving.errors import Forbidden, NotFound, TuneloopError
from serving.registry import AdapterRegistry, ServedAdapter
from store import adapters as adapter_repo
from store import audit as audit_repo
from store import feedback as feedback_repo
from store import runs as run_repo
from store.db import session_scope
from store.models import AdapterVersion, TrainingRun

log = logging.getLogger(__name__)
T = TypeVar("T")
RUN_POLL_S = 0.25


class CycleLauncher(Protocol):
    """Starts a tuning cycle in the background and returns its run id (implemented by the composition root)."""

    async def start(self, *, trigger: str, user_id: str | None, force: bool) -> int: ...


class AdminService:
    def __init__(
        self, *, engine: Engine, registry: AdapterRegistry, access: AccessPolicy, launcher: CycleLauncher | None
    ) -> None:
        self._engine = engine
        self._registry = registry
        self._access = access
        self._launcher = launcher

    async def promote(self, *, version: str, user_id: str, source: str) -> ServedAdapter:
        return await self._audited(user_id, source, "promote", version, lambda: self._registry.promote(version))

    async def rollback(self, *, version: str | None, user_id: str, source: str) -> ServedAdapter:
        return await self._audited(user_id, source, "rollback", version, lambda: self._registry.rollback(version))

    async def retrain(self, *, user_id: str, source: str) -> int:
        if self._launcher is None:
            raise TuneloopError("training is not available in this process")
        launcher = self._launcher
        return await self._audited(
            user_id, source, "retrain", None, lambda: launcher.start(trigger=source, user_id=user_id, force=True)
        )

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

    async def _audited(
        self, user_id: str, source: str, action: str, target: str | None, call: Callable[[], Awaitable[T]]
    ) -> T:
        if not self._access.is_admin(user_id):
            self._audit(user_id, source, action, target, "refused", {"reason": "not an admin"})
            raise Forbidden(
                f"{action} needs an admin; {user_id} is not one",
                hint=self._access.refusal_hint(Role.admin),
            )
        try:
            result = await call()
        except TuneloopError as error:
            self._audit(user_id, source, action, target, "failed", {"error": error.message})
            raise
        detail: dict[str, Any] = {}
        if isinstance(result, ServedAdapter):
            detail = {"active": result.version, "swap_ms": self._registry.last_swap_ms}
        elif isinstance(result, int):
            detail = {"run_id": result}
        self._audit(user_id, source, action, target, "ok", detail)
        return result

    def _audit(
        self, actor: str, source: str, action: str, target: str | None, outcome: str, detail: dict[str, Any]
    ) -> None:
        with session_scope(self._engine) as session:
            audit_repo.record_audit(
                session=session,
                actor=actor,
                source=source,
                action=action,
                target=target,
                outcome=outcome,
                detail=detail,
            )
        log.info("audit action=%s actor=%s target=%s outcome=%s", action, actor, target, outcome)


def version_to_json(row: AdapterVersion, *, active: bool) -> dict[str, Any]:
    return AdapterVersionPublic.from_row(row, active=active).model_dump(mode="json")


def run_to_json(run: TrainingRun) -> dict[str, Any]:
    return RunPublic.from_row(run).model_dump(mode="json")
