"""GET /healthz: open to anyone (load balancers, `make up`), so it tells the status and nothing about the host."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from serving.api.deps import ServicesDep
from serving.api.health.protocol import EngineHealth, Health, HealthDetails
from serving.errors import Unauthenticated

router = APIRouter()


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(request: Request, services: ServicesDep) -> JSONResponse:
    engine_ok = await services.client.healthy()
    ready = engine_ok and services.ready.is_set()
    is_admin = await _is_admin(request, services)
    health = Health(
        status="ok" if ready else ("starting" if not services.ready.is_set() else "degraded"),
        engine=EngineHealth(healthy=engine_ok, url=services.client.base_url if is_admin else None),
        active_adapter=services.registry.active.version,
        details=HealthDetails(
            loaded_adapters=services.registry.loaded_versions,
            active_model=services.registry.active.model,
            merged_version=services.registry.merged.serving_version if services.registry.merged else None,
            **services.info,
        )
        if is_admin
        else None,
    )
    return JSONResponse(status_code=200 if ready else 503, content=health.model_dump(mode="json", exclude_none=True))


async def _is_admin(request: Request, services: ServicesDep) -> bool:
    authorization = request.headers.get("authorization")
    if not authorization:
        return False
    try:
        principal = await services.authenticator.from_bearer(authorization)
    except Unauthenticated:
        return False  # a bad token on the open route is simply anonymous
    return principal.is_admin


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
