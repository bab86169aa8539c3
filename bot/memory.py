"""The memory of reviewed answers as Slack shows it: the entry a corrected answer came from, App Home's list and
search, and reviewers' edits and retirements.

Reads go to the store (store.memory); lookups by meaning, edits and retirements go through ReviewedMemory, as
the HTTP API's do (each change with its audit event in one transaction). Everything here blocks: call it in a
thread. The answer text never goes into a log line or an audit event.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlmodel import Session

from bot import views
from serving.errors import Conflict, InvalidQuestion, NotFound
from serving.memory import ReviewedMemory, usable_answer
from store import memory as memory_repo
from store.audit import record_audit
from store.db import session_scope
from store.models import Interaction, MemoryEntry, MemoryStatus

log = logging.getLogger(__name__)

SOURCE = "slack"
RETIRE = "memory.retire"
EDIT = "memory.edit"
SEARCH = "memory.search"
HOME_ENTRIES = 10
# MiniLM scores unrelated questions below about 0.3: beneath it a search shows nothing rather than noise.
SEARCH_FLOOR = 0.3


def audit_target(entry_id: int | None) -> str | None:
    return f"memory:{entry_id}" if entry_id is not None else None


# --- the correction modal ------------------------------------------------------------------------
def matched_entry(*, engine: Engine, interaction: Interaction) -> views.CorrectionOutlook | None:
    """The entry the memory gave `interaction`'s answer, if any; what a correction does to it is not decided yet."""
    if interaction.memory_entry_id is None:
        return None
    with session_scope(engine) as session:
        entry = memory_repo.get_entry(session=session, entry_id=interaction.memory_entry_id)
        if entry is None or entry.id is None:
            return None
        wordings = memory_repo.wordings_of(session=session, entry_id=entry.id)
    return views.CorrectionOutlook(
        entry_id=entry.id,
        wording=wordings[0] if wordings else "",
        approved_by=entry.approved_by,
        approved_at=entry.approved_at,
        active=entry.status == MemoryStatus.active,
    )


# --- App Home ------------------------------------------------------------------------------------
def newest_entries(*, engine: Engine, limit: int = HOME_ENTRIES) -> list[views.ReviewedEntry]:
    """The newest active entries, each with its first wording."""
    with session_scope(engine) as session:
        page = memory_repo.page_entries(session=session, limit=limit, status=MemoryStatus.active)
        return [_shown(session, entry) for entry in page.items]


def search_entries(*, memory: ReviewedMemory, text: str, limit: int = HOME_ENTRIES) -> list[views.ReviewedEntry]:
    """The active entries nearest `text` by meaning, best first, each with its wording nearest to it."""
    return [
        views.ReviewedEntry(
            entry_id=hit.entry_id,
            wording=hit.wording,
            answer=hit.answer,
            approved_by=hit.approved_by,
            approved_at=hit.approved_at,
            score=hit.score,
        )
        for hit in memory.search(text, limit=limit, floor=SEARCH_FLOOR)
    ]


def entry_to_edit(*, engine: Engine, entry_id: int) -> views.ReviewedEntry:
    with session_scope(engine) as session:
        return _shown(session, _active_entry(session, entry_id))


def check_edit(*, engine: Engine, entry_id: int, answer: str) -> str:
    """The edited answer as it will be stored, or what is wrong with it (read only: the modal acks with it)."""
    answer = usable_answer(answer)
    with session_scope(engine) as session:
        if _active_entry(session, entry_id).answer.strip() == answer:
            raise InvalidQuestion("the answer is unchanged", hint="Change the text first, or close the form.")
    return answer


def record_refusal(*, engine: Engine, actor: str, action: str, entry_id: int | None) -> None:
    """A non-reviewer's click or submission (a forged or stale view): refused, and audited as refused."""
    with session_scope(engine) as session:
        record_audit(
            session=session,
            actor=actor,
            source=SOURCE,
            action=action,
            target=audit_target(entry_id),
            outcome="refused",
            detail={"reason": "not a reviewer"},
        )
    log.warning("memory.refused action=%s entry=%s actor=%s source=%s", action, entry_id, actor, SOURCE)


def _active_entry(session: Session, entry_id: int) -> MemoryEntry:
    entry = memory_repo.get_entry(session=session, entry_id=entry_id)
    if entry is None:
        raise NotFound(f"reviewed answer #{entry_id} does not exist")
    if entry.status != MemoryStatus.active:
        raise Conflict(f"reviewed answer #{entry_id} is retired", hint="It no longer answers questions.")
    return entry


def _shown(session: Session, entry: MemoryEntry) -> views.ReviewedEntry:
    assert entry.id is not None
    wordings = memory_repo.wordings_of(session=session, entry_id=entry.id)
    return views.ReviewedEntry(
        entry_id=entry.id,
        wording=wordings[0] if wordings else "",
        answer=entry.answer,
        approved_by=entry.approved_by,
        approved_at=entry.approved_at,
    )
