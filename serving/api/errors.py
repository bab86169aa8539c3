"""One JSON error envelope for every failure: {"error": {"code", "message", "hint", "interaction_id"}}."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving.errors import TuneloopError

log = logging.getLogger(__name__)


def error_body(code: str, message: str, *, hint: str | None = None, **extra: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "hint": hint, **extra}}


def attach_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TuneloopError)
    async def tuneloop_error(_request: Request, error: TuneloopError) -> JSONResponse:
        body = error_body(error.code, error.message, hint=error.hint, interaction_id=error.interaction_id)
        return JSONResponse(status_code=error.status_code, content=body)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors())
        return JSONResponse(status_code=422, content=error_body("invalid_request", problems))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, error: Exception) -> JSONResponse:
        reference = uuid.uuid4().hex[:12]
        log.exception("api.unexpected_error ref=%s", reference)
        return JSONResponse(
            status_code=500,
            content=error_body(
                "internal_error",
                f"unexpected error (reference {reference})",
                hint="The service log has the cause under this reference.",
                reference=reference,
            ),
        )
