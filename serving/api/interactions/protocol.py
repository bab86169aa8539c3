"""Ask, vote, correct and review: request and response bodies (the CLI and the bot read these types too)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from serving.api.common import PageInfo, Strict
from store.models import Correction, Feedback, Interaction

# Schema bounds stop absurd bodies before anything is stored; the service applies the configured,
# smaller limits (serving.max_question_chars) and records refused questions, bounded.
MAX_QUESTION_CHARS = 100_000
MAX_TURN_CHARS = 20_000
MAX_CONTEXT_TURNS = 200
MAX_CORRECTION_CHARS = 8_000

CorrectionText = Annotated[str, StringConstraints(max_length=MAX_CORRECTION_CHARS)]


class ChatTurn(Strict):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=MAX_TURN_CHARS)


class AskRequest(Strict):
    question: str = Field(
        max_length=MAX_QUESTION_CHARS,
        description="The question; empty or oversized ones are refused and recorded (bounded).",
    )
    context: list[ChatTurn] = Field(
        default_factory=list, max_length=MAX_CONTEXT_TURNS, description="Earlier turns of the conversation."
    )
    source: Literal["api", "cli"] = "api"


class ReviewedAnswerUsed(BaseModel):
    """The reviewed answer an answer came from: given as is (`direct`) or put into the prompt (`prompt`)."""

    entry_id: int
    mode: Literal["prompt", "direct"]
    similarity: float = Field(description="MiniLM cosine of the question with the entry's nearest wording.")
    approved_by: str
    approved_at: datetime


class AskResponse(BaseModel):
    interaction_id: int
    answer: str
    adapter_version: str
    latency_ms: int
    memory: ReviewedAnswerUsed | None = None


class VoteRequest(Strict):
    vote: Literal["up", "down"]


class VoteResponse(BaseModel):
    interaction_id: int
    user: str
    vote: Literal["up", "down"]

    @classmethod
    def from_row(cls, feedback: Feedback) -> VoteResponse:
        return cls(
            interaction_id=feedback.interaction_id, user=feedback.user_id, vote="up" if feedback.vote > 0 else "down"
        )


class CorrectionRequest(Strict):
    text: CorrectionText


class ReviewRequest(Strict):
    decision: Literal["approve", "reject"]


class CorrectionPublic(BaseModel):
    correction_id: int
    interaction_id: int
    author: str
    status: str
    reviewer: str | None
    text: str
    created_at: datetime
    reviewed_at: datetime | None

    @classmethod
    def from_row(cls, correction: Correction) -> CorrectionPublic:
        assert correction.id is not None
        return cls(
            correction_id=correction.id,
            interaction_id=correction.interaction_id,
            author=correction.author_id,
            status=correction.status,
            reviewer=correction.reviewer_id,
            text=correction.text,
            created_at=correction.created_at,
            reviewed_at=correction.reviewed_at,
        )


class CorrectionPage(PageInfo):
    corrections: list[CorrectionPublic]


class InteractionPublic(BaseModel):
    id: int
    created_at: datetime
    user_id: str
    source: str
    channel: str | None
    thread_ts: str | None
    question: str
    context: list[dict[str, Any]]
    answer: str | None
    adapter_version: str | None
    latency_ms: int | None
    status: str
    error: str | None
    memory_entry_id: int | None = None
    memory_mode: str | None = None

    @classmethod
    def from_row(cls, interaction: Interaction) -> InteractionPublic:
        return cls.model_validate(interaction, from_attributes=True)


class InteractionPage(PageInfo):
    interactions: list[InteractionPublic]
