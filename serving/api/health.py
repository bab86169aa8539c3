"""GET /healthz: the engine and the active adapter."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from serving.api.deps import ServicesDep

router = APIRouter()


@router.get("/healthz")
async def healthz(services: ServicesDep) -> JSONResponse:
    engine_ok = await services.client.healthy()
    ready = engine_ok and services.ready.is_set()
    body: dict[str, Any] = {
        "status": "ok" if ready else ("starting" if not services.ready.is_set() else "degraded"),
        "engine": {"url": services.client.base_url, "healthy": engine_ok},
        "active_adapter": services.registry.active.version,
        "active_model": services.registry.active.model,
        "loaded_adapters": services.registry.loaded_versions,
        **services.info,
    }
    return JSONResponse(status_code=200 if ready else 503, content=body)


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
