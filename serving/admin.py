"""Admin actions (retrain, promote, roll back) for Slack, the CLI and HTTP alike. Every call is audited."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine

from serving.access import AccessPolicy, Role
from serving.errors import Forbidden, TuneloopError
from serving.registry import AdapterRegistry, ServedAdapter
from store import adapters as adapter_repo
from store import audit as audit_repo
from store import feedback as feedback_repo
from store import runs as run_repo
from store.db import session_scope
from store.models import AdapterVersion, TrainingRun

log = logging.getLogger(__name__)
T = TypeVar("T")


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

    def versions(self) -> list[dict[str, Any]]:
        with session_scope(self._engine) as session:
            rows = adapter_repo.list_versions(session=session)
        active = self._registry.active.version
        return [version_to_json(row, active=row.version == active) for row in rows]

    def status(self) -> dict[str, Any]:
        with session_scope(self._engine) as session:
            runs = run_repo.list_runs(session=session, limit=1)
            last_trained = run_repo.last_finished_run(session=session)
            since = last_trained.started_at if last_trained else None
            new_feedback = feedback_repo.count_new_feedback(session=session, since=since)
        return {
            "active_adapter": self._registry.active.version,
            "loaded_adapters": self._registry.loaded_versions,
            "last_run": run_to_json(runs[0]) if runs else None,
            "new_feedback_since_last_training": new_feedback,
            "access": self._access.mode,
        }

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
    return {
        "version": row.version,
        "status": row.status,
        "active": active,
        "run_id": row.run_id,
        "metrics": row.metrics,
        "created_at": row.created_at.isoformat(),
        "promoted_at": row.promoted_at.isoformat() if row.promoted_at else None,
    }


def run_to_json(run: TrainingRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status,
        "stage": run.stage,
        "trigger": run.trigger,
        "triggered_by": run.triggered_by,
        "progress": run.progress,
        "counts": run.counts,
        "metrics": run.metrics,
        "timings": run.timings,
        "adapter_version": run.adapter_version,
        "error": run.error,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }
