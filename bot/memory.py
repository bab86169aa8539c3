"""The memory of reviewed answers as Slack shows it: the entry a corrected answer came from, App Home's list and
search, and reviewers' edits and retirements.

Reads and writes go to the store directly (store.memory), each write with its audit event in one transaction;
lookups by meaning go through ReviewedMemory.search. Everything here blocks: call it in a thread. The answer
text never goes into a log line or an audit event.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from bot import views
from serving.memory import ReviewedMemory
from store import memory as memory_repo
from store.db import session_scope
from store.models import Interaction, MemoryStatus

log = logging.getLogger(__name__)


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


def entry_a_correction_replaces(*, engine: Engine, memory: ReviewedMemory, interaction: Interaction) -> int | None:
    """The entry an approved correction of `interaction` would replace; None when it would become a new entry.

    The same choice ReviewedMemory.remember makes: the entry an earlier correction of this very interaction made,
    else the entry with a wording at least `group_threshold` similar to the question (the same question group).
    """
    assert interaction.id is not None
    with session_scope(engine) as session:
        own = memory_repo.entry_of_interaction(session=session, interaction_id=interaction.id)
    if own is not None:
        return own.id
    same = memory.search(interaction.question, limit=1, floor=memory.settings.group_threshold)
    return same[0].entry_id if same else None
