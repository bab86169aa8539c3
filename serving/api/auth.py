"""Route dependencies for identity and roles: decided once, at the edge, and passed inward as a Principal.

Nothing reads a user id from a request body: the bearer token is the identity. A refusal for a missing
role is audited before the 403 goes out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from serving.access import Principal, Role
from serving.api.deps import ServicesDep
from serving.errors import Forbidden
from store import audit as audit_repo
from store.db import session_scope

log = logging.getLogger(__name__)
API_SOURCE = "api"


# Declares the scheme in the OpenAPI schema, so /docs has an "Authorize" button; the header is read below.
bearer_scheme = HTTPBearer(auto_error=False, description="An API token, from `tuneloop token create USER_ID`.")


async def authenticated(
    request: Request,
    services: ServicesDep,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> Principal:
    return await services.authenticator.from_bearer(request.headers.get("authorization"))


CurrentUser = Annotated[Principal, Depends(authenticated)]


def requires(role: Role, *, action: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets `role` (or higher) through and audits everyone else's refusal."""

    async def check(principal: CurrentUser, services: ServicesDep) -> Principal:
        if principal.role >= role:
            return principal
        await asyncio.to_thread(audit_refusal, services.engine, principal, action, role)
        raise Forbidden(
            f"{action} needs the {role.name} role; {principal.user_id} is {principal.role.name}",
            hint=services.authenticator.access.refusal_hint(role),
        )

    return check


def audit_refusal(engine: Engine, principal: Principal, action: str, needed: Role, *, source: str = API_SOURCE) -> None:
    """Store the refusal of `action` to `principal` for lack of the `needed` role (blocking: run it in a thread)."""
    with session_scope(engine) as session:
        audit_repo.record_audit(
            session=session,
            actor=principal.user_id,
            source=source,
            action=action,
            outcome="refused",
            detail={"reason": f"needs {needed.name}", "role": principal.role.name},
        )
    log.info("audit action=%s actor=%s outcome=refused needed=%s", action, principal.user_id, needed.name)
