"""Ask, vote, correct and review. Employees see and act on their own interactions; reviewers on everyone's."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query

from serving.access import Principal, Role
from serving.answers import Question
from serving.api.auth import CurrentUser, requires
from serving.api.common import ERROR_RESPONSES, Cursor, Limit, RowId, UserId
from serving.api.deps import ServicesDep
from serving.api.interactions.protocol import (
    AskRequest,
    AskResponse,
    CorrectionPage,
    CorrectionPublic,
    CorrectionRequest,
    InteractionPage,
    InteractionPublic,
    ReviewedAnswerUsed,
    ReviewRequest,
    VoteRequest,
    VoteResponse,
)
from serving.errors import NotFound
from store import feedback as feedback_repo
from store import interactions as interaction_repo
from store.db import session_scope
from store.models import Interaction

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)
Reviewer = Annotated[Principal, Depends(requires(Role.reviewer, action="review"))]
ReviewQueueReader = Annotated[Principal, Depends(requires(Role.reviewer, action="list_corrections"))]


@router.post("/ask")
async def ask(body: AskRequest, principal: CurrentUser, services: ServicesDep) -> AskResponse:
    answer = await services.answers.ask(
        Question(
            text=body.question,
            user_id=principal.user_id,
            source=body.source,
            context=[{"role": turn.role, "content": turn.content} for turn in body.context],
        )
    )
    return AskResponse(
        interaction_id=answer.interaction_id,
        answer=answer.text,
        adapter_version=answer.adapter_version,
        latency_ms=answer.latency_ms,
        memory=None
        if answer.memory is None or answer.memory_mode is None
        else ReviewedAnswerUsed(
            entry_id=answer.memory.entry_id,
            mode=answer.memory_mode.value,
            similarity=round(answer.memory.score, 3),
            approved_by=answer.memory.approved_by,
            approved_at=answer.memory.approved_at,
        ),
    )


@router.get("/interactions")
async def list_interactions(
    principal: CurrentUser,
    services: ServicesDep,
    limit: Limit = 50,
    before: Cursor = None,
    user: Annotated[UserId | None, Query(description="Reviewers only: one user's interactions.")] = None,
) -> InteractionPage:
    """Your own interactions, newest first; reviewers see everyone's (or one user's)."""
    owner = user if principal.is_reviewer else principal.user_id

    def read() -> InteractionPage:
        with session_scope(services.engine) as session:
            page = interaction_repo.page_interactions(session=session, limit=limit, before=before, user_id=owner)
        return InteractionPage(
            interactions=[InteractionPublic.from_row(row) for row in page.items],
            has_more=page.has_more,
            next_cursor=page.next_cursor,
        )

    return await asyncio.to_thread(read)


@router.get("/interactions/{interaction_id}")
async def get_interaction(interaction_id: RowId, principal: CurrentUser, services: ServicesDep) -> InteractionPublic:
    interaction = await asyncio.to_thread(_readable_interaction, services, principal, interaction_id)
    return InteractionPublic.from_row(interaction)


@router.post("/interactions/{interaction_id}/feedback")
async def vote(interaction_id: RowId, body: VoteRequest, principal: CurrentUser, services: ServicesDep) -> VoteResponse:
    await asyncio.to_thread(_readable_interaction, services, principal, interaction_id)
    feedback = await asyncio.to_thread(
        services.feedback.vote,
        interaction_id=interaction_id,
        user_id=principal.user_id,
        vote=1 if body.vote == "up" else -1,
    )
    return VoteResponse.from_row(feedback)


@router.post("/interactions/{interaction_id}/corrections")
async def correct(
    interaction_id: RowId, body: CorrectionRequest, principal: CurrentUser, services: ServicesDep
) -> CorrectionPublic:
    await asyncio.to_thread(_readable_interaction, services, principal, interaction_id)
    correction = await asyncio.to_thread(
        services.feedback.correct, interaction_id=interaction_id, user_id=principal.user_id, text=body.text
    )
    return CorrectionPublic.from_row(correction)


@router.get("/corrections")
async def list_corrections(
    _reviewer: ReviewQueueReader,
    services: ServicesDep,
    limit: Limit = 50,
    before: Cursor = None,
    status: Annotated[str, Query(pattern="^(pending|approved|rejected|all)$")] = "pending",
) -> CorrectionPage:
    """Corrections, newest first: by default those waiting for a reviewer (reviewers only)."""

    def read() -> CorrectionPage:
        with session_scope(services.engine) as session:
            page = feedback_repo.page_corrections(
                session=session, limit=limit, before=before, status=None if status == "all" else status
            )
        return CorrectionPage(
            corrections=[CorrectionPublic.from_row(row) for row in page.items],
            has_more=page.has_more,
            next_cursor=page.next_cursor,
        )

    return await asyncio.to_thread(read)


@router.post("/corrections/{correction_id}/review")
async def review(
    correction_id: RowId, body: ReviewRequest, reviewer: Reviewer, services: ServicesDep
) -> CorrectionPublic:
    correction = await asyncio.to_thread(
        services.feedback.review,
        correction_id=correction_id,
        user_id=reviewer.user_id,
        approve=body.decision == "approve",
    )
    return CorrectionPublic.from_row(correction)


def _readable_interaction(services: ServicesDep, principal: Principal, interaction_id: int) -> Interaction:
    """The interaction, if this principal may see it: their own, or any for a reviewer. Others' look absent."""
    with session_scope(services.engine) as session:
        interaction = interaction_repo.get_interaction(session=session, interaction_id=interaction_id)
    if interaction is None or (interaction.user_id != principal.user_id and not principal.is_reviewer):
        raise NotFound(f"interaction {interaction_id} does not exist, or is not yours")
    return interaction


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
