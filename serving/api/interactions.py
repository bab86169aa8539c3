"""Ask, vote, correct and review: the API the CLI uses (the Slack bot calls the same services)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field

from serving.answers import Question, answer_to_json
from serving.api.deps import ServicesDep
from serving.errors import NotFound
from store import interactions as interaction_repo
from store.db import session_scope
from store.models import Correction

router = APIRouter(prefix="/api")


class ChatTurn(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class AskRequest(BaseModel):
    question: str = Field(description="The question; empty or oversized questions are recorded and refused.")
    user: str = Field(min_length=1, max_length=128)
    context: list[ChatTurn] = Field(default_factory=list, description="Earlier turns of the conversation.")
    source: str = "api"


class VoteRequest(BaseModel):
    user: str = Field(min_length=1, max_length=128)
    vote: Literal["up", "down"]


class CorrectionRequest(BaseModel):
    user: str = Field(min_length=1, max_length=128)
    text: str


class ReviewRequest(BaseModel):
    user: str = Field(min_length=1, max_length=128)
    decision: Literal["approve", "reject"]


@router.post("/ask")
async def ask(body: AskRequest, services: ServicesDep) -> dict[str, Any]:
    answer = await services.answers.ask(
        Question(
            text=body.question,
            user_id=body.user,
            source=body.source[:32],
            context=[turn.model_dump() for turn in body.context],
        )
    )
    return answer_to_json(answer)


@router.get("/interactions/{interaction_id}")
async def get_interaction(interaction_id: int, services: ServicesDep) -> dict[str, Any]:
    with session_scope(services.engine) as session:
        interaction = interaction_repo.get_interaction(session=session, interaction_id=interaction_id)
    if interaction is None:
        raise NotFound(f"interaction {interaction_id} does not exist")
    return interaction.model_dump(mode="json")


@router.post("/interactions/{interaction_id}/feedback")
async def vote(interaction_id: int, body: VoteRequest, services: ServicesDep) -> dict[str, Any]:
    feedback = services.feedback.vote(
        interaction_id=interaction_id, user_id=body.user, vote=1 if body.vote == "up" else -1
    )
    return {"interaction_id": interaction_id, "user": feedback.user_id, "vote": body.vote}


@router.post("/interactions/{interaction_id}/corrections")
async def correct(interaction_id: int, body: CorrectionRequest, services: ServicesDep) -> dict[str, Any]:
    correction = services.feedback.correct(interaction_id=interaction_id, user_id=body.user, text=body.text)
    return correction_to_json(correction)


@router.get("/corrections")
async def list_pending(services: ServicesDep) -> dict[str, Any]:
    return {"corrections": [correction_to_json(c) for c in services.feedback.pending()]}


@router.post("/corrections/{correction_id}/review")
async def review(correction_id: int, body: ReviewRequest, services: ServicesDep) -> dict[str, Any]:
    correction = services.feedback.review(
        correction_id=correction_id, user_id=body.user, approve=body.decision == "approve"
    )
    return correction_to_json(correction)


def correction_to_json(correction: Correction) -> dict[str, Any]:
    return {
        "correction_id": correction.id,
        "interaction_id": correction.interaction_id,
        "author": correction.author_id,
        "status": correction.status,
        "reviewer": correction.reviewer_id,
        "text": correction.text,
    }


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
