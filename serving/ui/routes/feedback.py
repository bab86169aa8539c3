"""Feedback: interactions with their votes and corrections, searchable and paginated. An employee sees only
their own questions (the filter is the session's identity, whatever the address says); reviewers see everyone's."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from serving.access import Role
from serving.api.common import Cursor
from serving.api.deps import Services, ServicesDep
from serving.api.interactions.protocol import CorrectionPublic, InteractionPublic
from serving.ui.auth import viewer
from serving.ui.sessions import SignedIn
from serving.ui.templating import page
from serving.ui.views import FeedbackView, InteractionRow, VoteCounts
from store import feedback as feedback_repo
from store import interactions as interaction_repo
from store.db import session_scope

router = APIRouter(prefix="/ui")
PAGE = 25
MAX_SEARCH_CHARS = 200
Reader = Annotated[SignedIn, Depends(viewer(Role.employee, action="ui.feedback"))]


def feedback_view(
    services: Services, user: SignedIn, *, query: str | None, user_filter: str | None, before: int | None
) -> FeedbackView:
    everyone = user.principal.is_reviewer
    owner = user_filter if everyone else user.principal.user_id
    with session_scope(services.engine) as session:
        found = interaction_repo.page_interactions(
            session=session, limit=PAGE, before=before, user_id=owner, contains=query
        )
        ids = [row.id for row in found.items if row.id is not None]
        votes = feedback_repo.vote_totals(session=session, interaction_ids=ids)
        corrections = feedback_repo.corrections_of(session=session, interaction_ids=ids)
    rows = []
    for row in found.items:
        assert row.id is not None
        up, down = votes.get(row.id, (0, 0))
        rows.append(
            InteractionRow(
                interaction=InteractionPublic.from_row(row),
                votes=VoteCounts(up=up, down=down),
                corrections=[CorrectionPublic.from_row(c) for c in corrections.get(row.id, [])],
            )
        )
    return FeedbackView(
        rows=rows,
        query=query,
        user=owner if everyone else None,
        everyone=everyone,
        has_more=found.has_more,
        next_cursor=found.next_cursor,
    )


@router.get("/feedback", include_in_schema=False)
async def show(
    request: Request,
    user: Reader,
    services: ServicesDep,
    q: Annotated[str | None, Query(max_length=MAX_SEARCH_CHARS)] = None,
    who: Annotated[str | None, Query(max_length=128, description="Reviewers only: one user's interactions.")] = None,
    before: Cursor = None,
) -> Response:
    query = q.strip() if q and q.strip() else None
    # An empty field of the filter form means "everyone", not an error.
    user_filter = who.strip() if who and who.strip() else None
    view = await asyncio.to_thread(feedback_view, services, user, query=query, user_filter=user_filter, before=before)
    return page(request, "feedback.html", user=user, view=view)
