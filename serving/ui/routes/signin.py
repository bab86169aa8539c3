"""Sign in with a tuneloop API token (it becomes a session cookie), and sign out."""

from __future__ import annotations

import asyncio
import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from starlette.responses import RedirectResponse, Response

from serving.access import Role
from serving.errors import Unauthenticated
from serving.ui.auth import COOKIE, MaybeSignedIn, SessionsDep, actor
from serving.ui.sessions import SignedIn
from serving.ui.templating import page

router = APIRouter(prefix="/ui")
# Before a session exists, the sign-in form is tied to the browser by a cookie of its own (double submit).
SIGNIN_COOKIE = "tuneloop_signin"
MAX_NEXT_CHARS = 500


def safe_next(target: str | None) -> str:
    """Only a path of the dashboard itself: never another site (an open redirect)."""
    if not target or len(target) > MAX_NEXT_CHARS or not target.startswith("/ui") or "//" in target or "\\" in target:
        return "/ui"
    return target


def _signin_page(request: Request, *, next_path: str, error: str | None = None, status_code: int = 200) -> Response:
    nonce = secrets.token_urlsafe(24)
    response = page(
        request, "signin.html", user=None, status_code=status_code, nonce=nonce, next_path=next_path, error=error
    )
    response.set_cookie(
        SIGNIN_COOKIE, nonce, httponly=True, samesite="strict", path="/ui", secure=request.url.scheme == "https"
    )
    return response


@router.get("/signin", include_in_schema=False)
async def signin_form(request: Request, user: MaybeSignedIn, next: str | None = None) -> Response:
    if user is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _signin_page(request, next_path=safe_next(next))


@router.post("/signin", include_in_schema=False)
async def signin(
    request: Request,
    sessions: SessionsDep,
    token: Annotated[str, Form(max_length=500)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=MAX_NEXT_CHARS)] = "/ui",
) -> Response:
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not hmac.compare_digest(csrf.encode(), expected.encode()):
        return _signin_page(
            request, next_path=safe_next(next), error="The form expired: please sign in again.", status_code=403
        )
    try:
        opened = await asyncio.to_thread(sessions.sign_in, token)
    except Unauthenticated as error:
        return _signin_page(request, next_path=safe_next(next), error=error.message, status_code=401)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        opened.key,
        max_age=int(sessions.lifetime.total_seconds()),
        httponly=True,
        samesite="strict",
        path="/ui",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/ui")
    return response


@router.post("/signout", include_in_schema=False)
async def signout(
    request: Request,
    sessions: SessionsDep,
    _user: Annotated[SignedIn, Depends(actor(Role.employee, action="ui.signout"))],
) -> Response:
    key = request.cookies.get(COOKIE)
    if key:
        await asyncio.to_thread(sessions.sign_out, key)
    response = RedirectResponse("/ui/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response
