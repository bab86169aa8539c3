"""Review: pending corrections beside the question and the answer given (approve, reject, edit then approve),
and the memory's entries (list, search by meaning, edit, retire). Reviewers and admins."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Query, Request
from starlette.responses import RedirectResponse, Response

from serving.access import Role
from serving.api.common import Cursor, RowId
from serving.api.deps import Services, ServicesDep
from serving.api.interactions.protocol import MAX_CORRECTION_CHARS
from serving.api.memory.protocol import MAX_QUERY_CHARS, MemoryEntryPublic
from serving.errors import InvalidQuestion
from serving.ui.auth import actor, viewer
from serving.ui.notices import notice_of
from serving.ui.sessions import SignedIn
from serving.ui.templating import page
from serving.ui.views import PendingCorrection, ReviewView
from store import feedback as feedback_repo
from store import interactions as interaction_repo
from store.db import session_scope
from store.models import CorrectionStatus, MemoryStatus

router = APIRouter(prefix="/ui")
PAGE = 20
Reader = Annotated[SignedIn, Depends(viewer(Role.reviewer, action="ui.review"))]
Reviewer = Annotated[SignedIn, Depends(actor(Role.reviewer, action="review"))]
Editor = Annotated[SignedIn, Depends(actor(Role.reviewer, action="memory.edit"))]
Retirer = Annotated[SignedIn, Depends(actor(Role.reviewer, action="memory.retire"))]
MemoryStatusFilter = Literal["active", "retired", "all"]


def pending_page(services: Services, *, before: int | None) -> tuple[list[PendingCorrection], bool, int | None]:
    with session_scope(services.engine) as session:
        found = feedback_repo.page_corrections(
            session=session, limit=PAGE, before=before, status=CorrectionStatus.pending
        )
        asked = interaction_repo.interactions_by_id(
            session=session, interaction_ids=sorted({c.interaction_id for c in found.items})
        )
    rows = []
    for correction in found.items:
        interaction = asked.get(correction.interaction_id)
        assert correction.id is not None
        rows.append(
            PendingCorrection(
                id=correction.id,
                interaction_id=correction.interaction_id,
                author=correction.author_id,
                question=interaction.question if interaction else "",
                answer=interaction.answer if interaction else None,
                answered_by_version=interaction.adapter_version if interaction else None,
                correction=correction.text,
                created_at=correction.created_at,
            )
        )
    return rows, found.has_more, found.next_cursor


def memory_page(
    services: Services, *, query: str | None, status: MemoryStatusFilter, before: int | None
) -> tuple[list[MemoryEntryPublic], bool, int | None]:
    memory = services.memory
    if query:
        found = memory.find(query, limit=PAGE)
        questions = memory.questions_of([entry.id for entry, _ in found if entry.id is not None])
        return (
            [MemoryEntryPublic.from_row(e, question=questions.get(e.id or 0), similarity=s) for e, s in found],
            False,
            None,
        )
    listed = memory.list_entries(limit=PAGE, before=before, status=None if status == "all" else MemoryStatus(status))
    questions = memory.questions_of([entry.id for entry in listed.items if entry.id is not None])
    entries = [MemoryEntryPublic.from_row(e, question=questions.get(e.id or 0)) for e in listed.items]
    return entries, listed.has_more, listed.next_cursor


def review_view(
    services: Services, *, before: int | None, query: str | None, status: MemoryStatusFilter, memory_before: int | None
) -> ReviewView:
    pending, has_more, next_cursor = pending_page(services, before=before)
    entries, memory_more, memory_next = memory_page(services, query=query, status=status, before=memory_before)
    return ReviewView(
        pending=pending,
        pending_has_more=has_more,
        pending_next=next_cursor,
        memory=entries,
        memory_query=query,
        memory_status=status,
        memory_has_more=memory_more,
        memory_next=memory_next,
    )


@router.get("/review", include_in_schema=False)
async def show(
    request: Request,
    user: Reader,
    services: ServicesDep,
    before: Cursor = None,
    q: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS)] = None,
    status: MemoryStatusFilter = "active",
    mbefore: Cursor = None,
    done: str | None = None,
) -> Response:
    query = q.strip() if q and q.strip() else None
    view = await asyncio.to_thread(
        review_view, services, before=before, query=query, status=status, memory_before=mbefore
    )
    return page(request, "review.html", user=user, view=view, notice=notice_of(done))


@router.post("/review/{correction_id}", include_in_schema=False)
async def decide(
    correction_id: RowId,
    user: Reviewer,
    services: ServicesDep,
    decision: Annotated[Literal["approve", "reject", "edit"], Form()],
    text: Annotated[str | None, Form(max_length=MAX_CORRECTION_CHARS)] = None,
) -> Response:
    if decision == "edit" and not (text and text.strip()):
        raise InvalidQuestion("an edited correction needs its text", hint="Write the answer the bot should give.")
    await asyncio.to_thread(
        services.feedback.review,
        correction_id=correction_id,
        user_id=user.principal.user_id,
        approve=decision != "reject",
        text=text if decision == "edit" else None,
    )
    done = {"approve": "approved", "reject": "rejected", "edit": "edited"}[decision]
    return RedirectResponse(f"/ui/review?done={done}", status_code=303)


@router.post("/memory/{entry_id}/edit", include_in_schema=False)
async def edit_entry(
    entry_id: RowId,
    user: Editor,
    services: ServicesDep,
    answer: Annotated[str, Form(max_length=MAX_CORRECTION_CHARS)],
) -> Response:
    await asyncio.to_thread(services.memory.edit, entry_id, answer=answer, by=user.principal)
    return RedirectResponse("/ui/review?done=memory_edited#memory", status_code=303)


@router.post("/memory/{entry_id}/retire", include_in_schema=False)
async def retire_entry(entry_id: RowId, user: Retirer, services: ServicesDep) -> Response:
    await asyncio.to_thread(services.memory.retire, entry_id, by=user.principal)
    return RedirectResponse("/ui/review?done=memory_retired#memory", status_code=303)
