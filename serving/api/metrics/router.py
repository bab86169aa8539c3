"""GET /metrics (the service's) and GET /metrics/vllm (vLLM's own), in Prometheus' text format, for admins.

A scraper authenticates as any other caller: `Authorization: Bearer <token>` of a user in the admins. vLLM's
metrics are relayed rather than its port exposed: its port stays on the host, behind the same credential.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.access import Role
from serving.api.auth import requires
from serving.api.common import ERROR_RESPONSES
from serving.api.deps import ServicesDep

router = APIRouter(responses=ERROR_RESPONSES)
ADMINS_ONLY = [Depends(requires(Role.admin, action="read_metrics"))]
PROMETHEUS_TEXT: dict[int | str, dict[str, Any]] = {200: {"content": {CONTENT_TYPE_LATEST: {}}}}


@router.get(
    "/metrics",
    response_class=Response,
    responses=PROMETHEUS_TEXT,
    dependencies=ADMINS_ONLY,
)
async def service_metrics(services: ServicesDep) -> Response:
    """Answers, feedback, cycles and the engine; gauges of the store are read now."""
    # In a worker thread: collecting reads the store (pending corrections, memory entries).
    body = await asyncio.to_thread(generate_latest, services.metrics.registry)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/metrics/vllm",
    response_class=Response,
    responses=PROMETHEUS_TEXT,
    dependencies=ADMINS_ONLY,
)
async def vllm_metrics(services: ServicesDep) -> Response:
    """vLLM's own metrics (its GET /metrics) as it answered them; 503 `engine_unavailable` while it is down."""
    upstream = await services.client.metrics()
    return Response(content=upstream.content, media_type=upstream.headers.get("content-type", CONTENT_TYPE_LATEST))


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
