"""The memory of reviewed answers for reviewers: list, search by meaning, show, edit and retire entries.

The work is `ReviewedMemory`'s (serving.memory), shared with Slack's App Home; edits and retirements are audited
there, in the change's own commit.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Query

from serving.access import Principal, Role
from serving.api.auth import requires
from serving.api.common import ERROR_RESPONSES, Cursor, Limit, RowId
from serving.api.deps import ServicesDep
from serving.api.memory.protocol import (
    MAX_QUERY_CHARS,
    MemoryEditRequest,
    MemoryEntryDetails,
    MemoryEntryPage,
    MemoryEntryPublic,
)
from serving.errors import InvalidRequest
from serving.memory import ReviewedMemory
from store.models import MemoryStatus

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)
Lister = Annotated[Principal, Depends(requires(Role.reviewer, action="memory.list"))]
Reader = Annotated[Principal, Depends(requires(Role.reviewer, action="memory.show"))]
Editor = Annotated[Principal, Depends(requires(Role.reviewer, action="memory.edit"))]
Retirer = Annotated[Principal, Depends(requires(Role.reviewer, action="memory.retire"))]


@router.get("/memory")
async def list_entries(
    _reviewer: Lister,
    services: ServicesDep,
    limit: Limit = 50,
    before: Cursor = None,
    status: Annotated[
        Literal["active", "retired", "all"] | None, Query(description="Default: active. Not with `q`.")
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_QUERY_CHARS,
            description="Search by meaning instead: active entries, best first, at most `limit`, with their "
            "`similarity`. A search is one ranked page: it takes no `before` and answers no `next_cursor`.",
        ),
    ] = None,
) -> MemoryEntryPage:
    """Entries newest first (reviewers only); with `q`, the entries nearest in meaning to it instead."""
    memory = _memory(services)
    if q is not None:
        if before is not None or status not in (None, "active"):
            raise InvalidRequest(
                "a search (q) looks at active entries only, in one ranked page",
                hint="Drop `before` and `status`, or drop `q` to list entries.",
            )
        return await asyncio.to_thread(_search, memory, q, limit)

    def read() -> MemoryEntryPage:
        wanted = None if status == "all" else MemoryStatus(status or "active")
        page = memory.list_entries(limit=limit, before=before, status=wanted)
        questions = memory.questions_of([entry.id for entry in page.items if entry.id is not None])
        return MemoryEntryPage(
            entries=[MemoryEntryPublic.from_row(entry, question=questions.get(entry.id or 0)) for entry in page.items],
            has_more=page.has_more,
            next_cursor=page.next_cursor,
        )

    return await asyncio.to_thread(read)


@router.get("/memory/{entry_id}")
async def show_entry(entry_id: RowId, _reviewer: Reader, services: ServicesDep) -> MemoryEntryDetails:
    """One entry with every wording of its question and how many answers used it (reviewers only)."""
    return await asyncio.to_thread(_details, _memory(services), entry_id)


@router.patch("/memory/{entry_id}")
async def edit_entry(
    entry_id: RowId, body: MemoryEditRequest, reviewer: Editor, services: ServicesDep
) -> MemoryEntryDetails:
    """Replace an active entry's answer; you become its approver (audited). A retired entry is a 409."""
    memory = _memory(services)
    await asyncio.to_thread(memory.edit, entry_id, answer=body.answer, by=reviewer)
    return await asyncio.to_thread(_details, memory, entry_id)


@router.post("/memory/{entry_id}/retire")
async def retire_entry(entry_id: RowId, reviewer: Retirer, services: ServicesDep) -> MemoryEntryDetails:
    """Stop serving an entry, at once in every process (audited). Retiring it again is a 409."""
    memory = _memory(services)
    await asyncio.to_thread(memory.retire, entry_id, by=reviewer)
    return await asyncio.to_thread(_details, memory, entry_id)


def _memory(services: ServicesDep) -> ReviewedMemory:
    return services.memory


def _search(memory: ReviewedMemory, query: str, limit: int) -> MemoryEntryPage:
    found = memory.find(query, limit=limit)
    questions = memory.questions_of([entry.id for entry, _ in found if entry.id is not None])
    return MemoryEntryPage(
        entries=[
            MemoryEntryPublic.from_row(entry, question=questions.get(entry.id or 0), similarity=similarity)
            for entry, similarity in found
        ],
        has_more=False,
        next_cursor=None,
    )


def _details(memory: ReviewedMemory, entry_id: int) -> MemoryEntryDetails:
    details = memory.show(entry_id)
    return MemoryEntryDetails.from_details(
        details.entry, wordings=details.wordings, answers_using=details.answers_using
    )


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
