"""Errors under /ui answer as pages, not JSON: a clear 4xx page with a hint, never a stack trace.

The API's JSON envelope handlers stay in charge of every other path; these wrap them.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from serving.errors import TuneloopError, Unauthenticated
from serving.ui.templating import page

log = logging.getLogger(__name__)
PREFIX = "/ui"


def is_dashboard(request: Request) -> bool:
    path = request.url.path
    return path == PREFIX or path.startswith(PREFIX + "/")


def attach_error_pages(app: FastAPI) -> None:
    previous: dict[Any, Any] = dict(app.exception_handlers)

    def wrap(kind: type[Exception], render: Any) -> None:
        fallback = previous.get(kind)

        async def handle(request: Request, error: Exception) -> Response:
            if is_dashboard(request) or fallback is None:
                rendered: Response = await render(request, error)
                return rendered
            response: Response = await fallback(request, error)
            return response

        app.add_exception_handler(kind, handle)

    wrap(TuneloopError, _tuneloop_error)
    wrap(RequestValidationError, _invalid)
    wrap(StarletteHTTPException, _http_error)
    wrap(Exception, _unexpected)


def _error_page(request: Request, status: int, title: str, message: str, hint: str | None = None) -> Response:
    return page(
        request, "error.html", user=None, status_code=status, code=status, title=title, message=message, hint=hint
    )


async def _tuneloop_error(request: Request, error: TuneloopError) -> Response:
    if isinstance(error, Unauthenticated) and request.method in ("GET", "HEAD"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{PREFIX}/signin?next={quote(target, safe='')}", status_code=303)
    titles = {401: "Please sign in", 403: "Not allowed", 404: "Not found", 409: "Not possible now"}
    title = titles.get(error.status_code, "Something went wrong" if error.status_code >= 500 else "Not accepted")
    return _error_page(request, error.status_code, title, error.message, error.hint)


async def _invalid(request: Request, error: RequestValidationError) -> Response:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p not in ('query', 'body', 'path'))}: {e.get('msg')}"
        for e in error.errors()
    )
    return _error_page(request, 422, "Not accepted", problems[:500], "Check the form or the address and try again.")


async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
    if error.status_code == 404:
        return _error_page(
            request, 404, "Not found", f"there is no page {request.url.path}", "Start from the overview."
        )
    if error.status_code == 405:
        return _error_page(request, 405, "Not allowed", f"{request.method} is not allowed on {request.url.path}")
    return _error_page(request, error.status_code, "Not accepted", str(error.detail))


async def _unexpected(request: Request, error: Exception) -> Response:
    reference = uuid.uuid4().hex[:12]
    log.error("ui.unexpected_error ref=%s type=%s", reference, type(error).__name__, exc_info=error)
    return _error_page(
        request,
        500,
        "Something went wrong",
        f"unexpected error (reference {reference})",
        "The service log has the cause.",
    )
