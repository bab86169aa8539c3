"""Admin HTTP API: retrain, runs, adapters and their import, promote, roll back, audit, dataset export. Admins only."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query

from serving.access import Principal, Role
from serving.admin import IMPORT_ACTION
from serving.api.admin.protocol import (
    AdaptersResponse,
    AdapterVersionPublic,
    AuditEventPublic,
    AuditPage,
    DatasetResponse,
    ImportAdapterRequest,
    PromoteRequest,
    RollbackRequest,
    RunPage,
    RunPublic,
    StatusResponse,
    SwapResponse,
    TrainResponse,
)
from serving.api.auth import CurrentUser, requires
from serving.api.common import ERROR_RESPONSES, Cursor, Limit, RowId, UserId
from serving.api.deps import ServicesDep
from serving.errors import TuneloopError
from store import audit as audit_repo
from store import runs as run_repo
from store.db import session_scope

router = APIRouter(prefix="/admin", responses=ERROR_RESPONSES)
MAX_WAIT_S = 60.0
SOURCE = "api"


def admin_only(action: str) -> list[Any]:
    """The dependency of an admin-only route that needs no principal; a refusal is audited under `action`."""
    return [Depends(requires(Role.admin, action=action))]


Retrainer = Annotated[Principal, Depends(requires(Role.admin, action="retrain"))]
Promoter = Annotated[Principal, Depends(requires(Role.admin, action="promote"))]
RollbackAdmin = Annotated[Principal, Depends(requires(Role.admin, action="rollback"))]
Importer = Annotated[Principal, Depends(requires(Role.admin, action=IMPORT_ACTION))]


@router.post("/train", status_code=202)
async def train(principal: Retrainer, services: ServicesDep) -> TrainResponse:
    run_id = await services.admin.retrain(user_id=principal.user_id, source=SOURCE)
    return TrainResponse(run_id=run_id)


@router.get("/runs", dependencies=admin_only("list_runs"))
async def list_runs(
    services: ServicesDep,
    limit: Limit = 20,
    before: Cursor = None,
) -> RunPage:
    def read() -> RunPage:
        with session_scope(services.engine) as session:
            page = run_repo.page_runs(session=session, limit=limit, before=before)
        return RunPage(
            runs=[RunPublic.from_row(r) for r in page.items], has_more=page.has_more, next_cursor=page.next_cursor
        )

    return await asyncio.to_thread(read)


@router.get("/runs/{run_id}", dependencies=admin_only("read_run"))
async def get_run(
    run_id: RowId,
    services: ServicesDep,
    wait: Annotated[
        float,
        Query(ge=0, le=MAX_WAIT_S, allow_inf_nan=False, description="Long poll: answer when finished or after S s."),
    ] = 0.0,
) -> RunPublic:
    return await services.admin.wait_for_run(run_id, timeout_s=wait)


@router.get("/adapters", dependencies=admin_only("list_adapters"))
async def adapters(services: ServicesDep) -> AdaptersResponse:
    versions = await asyncio.to_thread(services.admin.versions)
    return AdaptersResponse(active=services.registry.active.version, versions=versions)


@router.post("/adapters/import", status_code=201)
async def import_adapter(
    body: ImportAdapterRequest, principal: Importer, services: ServicesDep
) -> AdapterVersionPublic:
    """Register a LoRA folder trained elsewhere, read from the service's own host, as a new version (not active)."""
    return await services.admin.import_adapter(
        path=body.path, version=body.version, user_id=principal.user_id, source=SOURCE
    )


@router.get("/status")
async def status(_principal: CurrentUser, services: ServicesDep) -> StatusResponse:
    """Everyone signed in may read it, as in Slack's `/tuneloop status`."""
    return await asyncio.to_thread(services.admin.status)


@router.post("/promote")
async def promote(body: PromoteRequest, principal: Promoter, services: ServicesDep) -> SwapResponse:
    adapter = await services.admin.promote(version=body.version, user_id=principal.user_id, source=SOURCE)
    return SwapResponse(active=adapter.version, swap_ms=services.registry.last_swap_ms)


@router.post("/rollback")
async def rollback(body: RollbackRequest, principal: RollbackAdmin, services: ServicesDep) -> SwapResponse:
    adapter = await services.admin.rollback(version=body.version, user_id=principal.user_id, source=SOURCE)
    return SwapResponse(active=adapter.version, swap_ms=services.registry.last_swap_ms)


@router.get("/audit", dependencies=admin_only("read_audit"))
async def audit(
    services: ServicesDep,
    limit: Limit = 100,
    before: Cursor = None,
    actor: UserId | None = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Annotated[str | None, Query(pattern="^(ok|refused|failed)$")] = None,
) -> AuditPage:
    def read() -> AuditPage:
        with session_scope(services.engine) as session:
            page = audit_repo.page_audit(
                session=session, limit=limit, before=before, actor=actor, action=action, outcome=outcome
            )
        return AuditPage(
            events=[AuditEventPublic.from_row(e) for e in page.items],
            has_more=page.has_more,
            next_cursor=page.next_cursor,
        )

    return await asyncio.to_thread(read)


@router.get("/dataset", dependencies=admin_only("read_dataset"))
async def dataset(services: ServicesDep) -> DatasetResponse:
    if services.export_datasets is None:
        raise TuneloopError("dataset export is not available in this process")
    rows = await services.export_datasets()
    return DatasetResponse(sft=rows.get("sft", []), dpo=rows.get("dpo", []))


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
