"""Who is signed in to the dashboard, what their role lets them see, and the CSRF check on every form post.

A page needs a session (else the browser is sent to sign in); a role below the page's is refused with a 403
page and the refusal audited (source `ui`), as the API does. Every POST carries the session's CSRF token in a
hidden `csrf` field; a post without it, or with another one, is refused before anything else is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from serving.access import Role
from serving.api.auth import audit_refusal
from serving.api.deps import ServicesDep
from serving.errors import Forbidden, Unauthenticated
from serving.ui.sessions import DashboardSessions, SignedIn

COOKIE = "tuneloop_session"
SOURCE = "ui"


class CsrfRefused(Forbidden):
    code = "csrf"


def dashboard_sessions(request: Request) -> DashboardSessions:
    sessions: DashboardSessions = request.app.state.dashboard_sessions
    return sessions


SessionsDep = Annotated[DashboardSessions, Depends(dashboard_sessions)]


async def current_session(request: Request, sessions: SessionsDep) -> SignedIn | None:
    return await asyncio.to_thread(sessions.find, request.cookies.get(COOKIE))


MaybeSignedIn = Annotated[SignedIn | None, Depends(current_session)]


async def signed_in(user: MaybeSignedIn) -> SignedIn:
    if user is None:
        raise Unauthenticated("sign in to see this page", hint="Sign in with your tuneloop token.")
    return user


SignedInDep = Annotated[SignedIn, Depends(signed_in)]


def viewer(role: Role, *, action: str) -> Callable[..., Awaitable[SignedIn]]:
    """A page's dependency: a session with `role` or higher; anyone else gets a 403 page, audited."""

    async def check(user: SignedInDep, services: ServicesDep) -> SignedIn:
        if user.principal.role < role:
            await asyncio.to_thread(audit_refusal, services.engine, user.principal, action, role, source=SOURCE)
            raise Forbidden(
                f"{action} needs the {role.name} role; you ({user.principal.user_id}) are {user.principal.role.name}",
                hint=services.access.refusal_hint(role),
            )
        return user

    return check


def actor(role: Role, *, action: str) -> Callable[..., Awaitable[SignedIn]]:
    """A form post's dependency: the session's CSRF token first, then the role as for a page."""
    check_role = viewer(role, action=action)

    async def check(request: Request, user: SignedInDep, services: ServicesDep) -> SignedIn:
        form = await request.form()
        sent = form.get("csrf")
        if not user.csrf_ok(sent if isinstance(sent, str) else None):
            raise CsrfRefused(
                "this form was not sent from the dashboard (its CSRF token is missing or wrong)",
                hint="Reload the page and send the form again.",
            )
        return await check_role(user, services)

    return check
