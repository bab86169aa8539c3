"""The audit log with filters (actor, action, outcome), newest first, paginated. Admins."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from serving.access import Role
from serving.api.admin.protocol import AuditEventPublic
from serving.api.common import Cursor
from serving.api.deps import Services, ServicesDep
from serving.ui.auth import viewer
from serving.ui.sessions import SignedIn
from serving.ui.templating import page
from serving.ui.views import AuditView
from store import audit as audit_repo
from store.db import session_scope

router = APIRouter(prefix="/ui")
PAGE = 50
Reader = Annotated[SignedIn, Depends(viewer(Role.admin, action="read_audit"))]
Outcome = Literal["ok", "refused", "failed"]


def audit_view(
    services: Services, *, actor: str | None, action: str | None, outcome: Outcome | None, before: int | None
) -> AuditView:
    with session_scope(services.engine) as session:
        found = audit_repo.page_audit(
            session=session, limit=PAGE, before=before, actor=actor, action=action, outcome=outcome
        )
    return AuditView(
        rows=[AuditEventPublic.from_row(event) for event in found.items],
        actor=actor,
        action=action,
        outcome=outcome,
        has_more=found.has_more,
        next_cursor=found.next_cursor,
    )


def _given(value: str | None) -> str | None:
    """An empty field of the filter form means "any", not an error."""
    return value.strip() if value and value.strip() else None


@router.get("/audit", include_in_schema=False)
async def show(
    request: Request,
    user: Reader,
    services: ServicesDep,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Annotated[Outcome | Literal[""] | None, Query()] = None,
    before: Cursor = None,
) -> Response:
    view = await asyncio.to_thread(
        audit_view, services, actor=_given(actor), action=_given(action), outcome=outcome or None, before=before
    )
    return page(request, "audit.html", user=user, view=view)
