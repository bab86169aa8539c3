"""Admin HTTP API: retrain, runs, adapters, promote, roll back, audit, dataset export."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field

from serving.admin import run_to_json
from serving.api.deps import ServicesDep
from serving.errors import NotFound, TuneloopError
from store import audit as audit_repo
from store import runs as run_repo
from store.db import session_scope
from store.models import RunStatus

router = APIRouter(prefix="/admin")
UNFINISHED = (RunStatus.queued, RunStatus.running)
MAX_WAIT_S = 60.0
LONG_POLL_INTERVAL_S = 0.25


class ActorRequest(BaseModel):
    user: str = Field(min_length=1, max_length=128)


class VersionRequest(ActorRequest):
    version: str | None = Field(default=None, description="Default for rollback: the version that served before.")


class PromoteRequest(ActorRequest):
    version: str = Field(min_length=1, max_length=32)


@router.post("/train", status_code=202)
async def train(body: ActorRequest, services: ServicesDep) -> dict[str, Any]:
    run_id = await services.admin.retrain(user_id=body.user, source="api")
    return {"run_id": run_id}


@router.get("/runs")
async def list_runs(services: ServicesDep, limit: int = 20) -> dict[str, Any]:
    with session_scope(services.engine) as session:
        runs = run_repo.list_runs(session=session, limit=limit)
    return {"runs": [run_to_json(run) for run in runs]}


@router.get("/runs/{run_id}")
async def get_run(run_id: int, services: ServicesDep, wait: float = 0.0) -> dict[str, Any]:
    """With `wait=S`, answer as soon as the run has finished, or after S seconds (a long poll)."""
    deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT_S)
    while True:
        with session_scope(services.engine) as session:
            run = run_repo.get_run(session=session, run_id=run_id)
        if run is None:
            raise NotFound(f"run {run_id} does not exist")
        if run.status not in UNFINISHED or time.monotonic() >= deadline:
            return run_to_json(run)
        await asyncio.sleep(LONG_POLL_INTERVAL_S)


@router.get("/adapters")
async def adapters(services: ServicesDep) -> dict[str, Any]:
    return {"active": services.registry.active.version, "versions": services.admin.versions()}


@router.get("/status")
async def status(services: ServicesDep) -> dict[str, Any]:
    return services.admin.status()


@router.post("/promote")
async def promote(body: PromoteRequest, services: ServicesDep) -> dict[str, Any]:
    adapter = await services.admin.promote(version=body.version, user_id=body.user, source="api")
    return {"active": adapter.version, "swap_ms": services.registry.last_swap_ms}


@router.post("/rollback")
async def rollback(body: VersionRequest, services: ServicesDep) -> dict[str, Any]:
    adapter = await services.admin.rollback(version=body.version, user_id=body.user, source="api")
    return {"active": adapter.version, "swap_ms": services.registry.last_swap_ms}


@router.get("/audit")
async def audit(services: ServicesDep, limit: int = 100) -> dict[str, Any]:
    with session_scope(services.engine) as session:
        events = audit_repo.list_audit(session=session, limit=limit)
    return {"events": [event.model_dump(mode="json") for event in events]}


@router.get("/dataset")
async def dataset(services: ServicesDep) -> dict[str, Any]:
    if services.export_datasets is None:
        raise TuneloopError("dataset export is not available in this process")
    return await services.export_datasets()


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
