"""The memory of reviewed answers, for reviewers: request and response bodies (the CLI reads these types too)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import BaseModel, Field, StringConstraints

from serving.api.common import PageInfo, Strict
from serving.api.interactions.protocol import MAX_CORRECTION_CHARS
from store.models import MemoryEntry

# An entry's answer starts as a correction's text: the same bounds, stripped, never empty.
MemoryAnswer = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CORRECTION_CHARS, strip_whitespace=True)]
MAX_QUERY_CHARS = 1_000


class MemoryEditRequest(Strict):
    answer: MemoryAnswer = Field(description="The answer to give from now on; you become its approver.")


class MemoryEntryPublic(BaseModel):
    id: int
    status: str = Field(description="active (served) or retired (kept, no longer served).")
    question: str | None = Field(description="The first wording of the entry's question.")
    answer: str
    approved_by: str
    approved_at: datetime
    correction_id: int | None = Field(
        description="The correction whose approval set the answer last; an edit keeps it."
    )
    created_at: datetime
    updated_at: datetime
    updated_by: str | None
    retired_at: datetime | None
    similarity: float | None = Field(
        default=None, description="In a search: MiniLM cosine of the query with the entry's nearest wording."
    )

    @classmethod
    def from_row(cls, entry: MemoryEntry, *, question: str | None, similarity: float | None = None) -> Self:
        return cls(
            **_entry_fields(entry), question=question, similarity=None if similarity is None else round(similarity, 3)
        )


class MemoryEntryPage(PageInfo):
    entries: list[MemoryEntryPublic]


class MemoryEntryDetails(MemoryEntryPublic):
    wordings: list[str] = Field(description="Every wording of the entry's question, oldest first.")
    answers_using: int = Field(description="Answers that used the entry, given as is or in the prompt.")

    @classmethod
    def from_details(cls, entry: MemoryEntry, *, wordings: list[str], answers_using: int) -> MemoryEntryDetails:
        return cls(
            **_entry_fields(entry),
            question=wordings[0] if wordings else None,
            wordings=wordings,
            answers_using=answers_using,
        )


def _entry_fields(entry: MemoryEntry) -> dict[str, Any]:
    assert entry.id is not None
    return {
        "id": entry.id,
        "status": entry.status,
        "answer": entry.answer,
        "approved_by": entry.approved_by,
        "approved_at": entry.approved_at,
        "correction_id": entry.correction_id,
        "created_at": entry.created_at,
        "updated_at": entry.updated_at,
        "updated_by": entry.updated_by,
        "retired_at": entry.retired_at,
    }
