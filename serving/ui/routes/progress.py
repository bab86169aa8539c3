"""GET /ui/progress.json: the newest unfinished run's stage, step, loss and ETA, polled by the pages (admins)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from serving.access import Role
from serving.api.deps import Services, ServicesDep
from serving.ui.auth import viewer
from serving.ui.sessions import SignedIn
from serving.ui.views import Progress
from store import runs as run_repo
from store.db import session_scope

router = APIRouter(prefix="/ui")
Watcher = Annotated[SignedIn, Depends(viewer(Role.admin, action="ui.progress"))]


def _number(progress: dict[str, Any], key: str) -> float | None:
    value = progress.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _stage(stage: str | None, step_kind: Any) -> str | None:
    # The run's stage (training), and which trainer reports the steps (sft, dpo) when one does.
    if isinstance(step_kind, str) and step_kind:
        return f"{stage or 'training'} ({step_kind})"
    return stage


def current_progress(services: Services) -> Progress:
    with session_scope(services.engine) as session:
        runs = run_repo.unfinished_runs(session=session)
    if not runs:
        return Progress(running=False)
    run = max(runs, key=lambda r: r.id or 0)
    step, total = _number(run.progress, "step"), _number(run.progress, "total")
    return Progress(
        running=True,
        run_id=run.id,
        status=run.status,
        stage=_stage(run.stage, run.progress.get("stage")),
        step=None if step is None else int(step),
        total=None if total is None else int(total),
        loss=_number(run.progress, "loss"),
        eta_s=_number(run.progress, "eta_s"),
    )


@router.get("/progress.json", include_in_schema=False)
async def progress(_user: Watcher, services: ServicesDep) -> Progress:
    return await asyncio.to_thread(current_progress, services)
