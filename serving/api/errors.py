"""One JSON error envelope for every failure: {"error": {"code", "message", "hint", "interaction_id"?}}.

Unknown routes, wrong methods, validation errors, oversized bodies and unexpected errors all answer in it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import TooLarge, TuneloopError, Unauthenticated

log = logging.getLogger(__name__)

HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 413: "too_large"}


def error_body(code: str, message: str, *, hint: str | None = None, **extra: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "hint": hint, **extra}}


def attach_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TuneloopError)
    async def tuneloop_error(_request: Request, error: TuneloopError) -> JSONResponse:
        body = error_body(error.code, error.message, hint=error.hint, interaction_id=error.interaction_id)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthenticated) else None
        return JSONResponse(status_code=error.status_code, content=body, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(_problem(e) for e in error.errors())
        return JSONResponse(status_code=422, content=error_body("invalid_request", problems[:2000]))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(error.status_code, "http_error")
        if error.status_code == 404:
            message = f"there is no route {request.method} {request.url.path}"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(error.detail)
        hint = "See /docs for the routes." if error.status_code in (404, 405) else None
        return JSONResponse(
            status_code=error.status_code, content=error_body(code, message, hint=hint), headers=error.headers
        )

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, error: Exception) -> JSONResponse:
        reference = uuid.uuid4().hex[:12]
        log.error("api.unexpected_error ref=%s type=%s", reference, type(error).__name__, exc_info=error)
        return JSONResponse(
            status_code=500,
            content=error_body(
                "internal_error",
                f"unexpected error (reference {reference})",
                hint="The service log has the cause under this reference.",
                reference=reference,
            ),
        )


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg')}"


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413, by Content-Length or while the body streams in.

    A streamed body that crosses the limit makes reading it fail; whatever the app then answers (FastAPI says
    400, "error parsing the body") is replaced by the 413, so the caller learns the real reason.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._max_bytes):
            await self._refuse(send)
            return
        seen = 0
        exceeded = False
        refused = False

        async def counted() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self._max_bytes:
                    exceeded = True
                    raise self._error()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal refused
            if not exceeded:
                await send(message)
            elif not refused:
                refused = True
                await self._refuse(send)

        try:
            await self._app(scope, counted, guarded_send)
        except Exception:
            if not exceeded:
                raise
            if not refused:
                await self._refuse(send)

    def _error(self) -> TooLarge:
        return TooLarge(
            f"the request body is over {self._max_bytes:,} bytes",
            hint="Send less: questions, contexts and corrections have their own, smaller limits.",
        )

    async def _refuse(self, send: Send) -> None:
        error = self._error()
        response = JSONResponse(status_code=413, content=error_body(error.code, error.message, hint=error.hint))
        scope: MutableMapping[str, Any] = {"type": "http"}
        await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
