"""OpenAI-compatible chat: `"model": "tuneloop"` means the active adapter; other names pass through to vLLM."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from serving.api.deps import ServicesDep
from serving.errors import InvalidQuestion

ALIAS = "tuneloop"
router = APIRouter(prefix="/v1")


@router.get("/models")
async def list_models(services: ServicesDep) -> dict[str, Any]:
    upstream = await services.client.list_models()
    alias = {"id": ALIAS, "object": "model", "owned_by": "tuneloop", "root": services.registry.active.model}
    return {"object": "list", "data": [alias, *upstream]}


@router.post("/chat/completions", response_model=None)
async def chat_completions(request: Request, services: ServicesDep) -> Response:
    try:
        payload: dict[str, Any] = await request.json()
    except ValueError as error:
        raise InvalidQuestion("the request body is not JSON") from error
    if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
        raise InvalidQuestion("the request needs a `messages` list", hint="See OpenAI's chat completions API.")
    requested = payload.get("model") or ALIAS
    if requested != ALIAS:
        return await _forward(services, payload)
    registry = services.registry
    adapter = registry.pin()
    payload = {**payload, "model": adapter.model}
    if not payload.get("stream"):
        try:
            return await _forward(services, payload, alias_for=adapter.model)
        finally:
            await registry.unpin(adapter)
    try:
        upstream = await services.client.open_stream("/v1/chat/completions", json_body=payload)
    except BaseException:
        await registry.unpin(adapter)
        raise
    if upstream.status_code != 200:
        body = await upstream.aread()
        await upstream.aclose()
        await registry.unpin(adapter)
        return Response(content=body, status_code=upstream.status_code, media_type="application/json")

    async def relay() -> AsyncIterator[bytes]:
        # The adapter stays pinned until the last byte, so a hot-swap never unloads it mid-stream.
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()
            await registry.unpin(adapter)

    return StreamingResponse(relay(), media_type="text/event-stream")


async def _forward(services: ServicesDep, payload: dict[str, Any], alias_for: str | None = None) -> Response:
    upstream = await services.client.forward("POST", "/v1/chat/completions", json_body=payload)
    if upstream.status_code == 200 and alias_for is not None:
        data = upstream.json()
        data["model"] = ALIAS
        return JSONResponse(content=data)
    return Response(content=upstream.content, status_code=upstream.status_code, media_type="application/json")


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
