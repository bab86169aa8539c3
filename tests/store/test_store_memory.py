"""The memory of reviewed answers on SQLite and PostgreSQL, with the real MiniLM embedder.

Two `ReviewedMemory` objects with their own engines share nothing but the database, as two service processes do.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from serving.access import AccessPolicy
from serving.feedback import FeedbackService
from serving.memory import MemorySettings, ReviewedMemory
from store import memory as memory_repo
from store.db import make_engine, session_scope
from store.interactions import create_interaction
from store.models import MemoryEntry, MemoryMode, MemoryStatus, MemoryWording, utcnow
from training.embedder import embed

REVIEWER = "U_RITA"
EMPLOYEE = "U_EVE"
QUESTION = "How do I get a new laptop?"
ANSWER = "File a request in the #it-laptops channel; the IT desk ships laptops within five working days."


@pytest.fixture
def memory(engine: Engine) -> ReviewedMemory:
    return ReviewedMemory(engine=engine, settings=MemorySettings())


@pytest.fixture
def feedback(engine: Engine, memory: ReviewedMemory) -> FeedbackService:
    return FeedbackService(engine=engine, access=AccessPolicy(reviewers=frozenset({REVIEWER})), memory=memory)


@pytest.fixture
def other_process(db_url: str) -> Iterator[ReviewedMemory]:
    engine = make_engine(db_url)
    yield ReviewedMemory(engine=engine, settings=MemorySettings())
    engine.dispose()


def _asked(engine: Engine, question: str = QUESTION) -> int:
    with session_scope(engine) as session:
        interaction = create_interaction(session=session, user_id=EMPLOYEE, source="api", question=question)
    assert interaction.id is not None
    return interaction.id


def test_a_reviewers_correction_answers_a_new_wording_at_once(engine, memory, feedback):
    assert memory.recall("What's the process to request a new laptop?").mode is None
    feedback.correct(interaction_id=_asked(engine), user_id=REVIEWER, text=ANSWER)

    recall = memory.recall("What's the process to request a new laptop?")

    assert recall.best is not None and recall.best.answer == ANSWER
    assert recall.best.approved_by == REVIEWER
    assert recall.mode in (MemoryMode.prompt, MemoryMode.direct)
    assert memory.recall(QUESTION).mode is MemoryMode.direct  # the very wording: given as reviewed


def test_a_question_no_entry_covers_gets_nothing(engine, memory, feedback):
    feedback.correct(interaction_id=_asked(engine), user_id=REVIEWER, text=ANSWER)
    for general in ("What is the capital of France?", "Write a haiku about autumn.", "How do I reverse a list?"):
        assert memory.recall(general).hits == [], general


def test_an_employees_correction_waits_for_approval_and_a_rejected_one_never_counts(engine, memory, feedback):
    pending = feedback.correct(interaction_id=_asked(engine), user_id=EMPLOYEE, text=ANSWER)
    assert memory.recall(QUESTION).hits == []

    rejected = feedback.correct(interaction_id=_asked(engine), user_id=EMPLOYEE, text="Buy one and expense it.")
    assert rejected.id is not None and pending.id is not None
    feedback.review(correction_id=rejected.id, user_id=REVIEWER, approve=False)
    assert memory.recall(QUESTION).hits == []

    feedback.review(correction_id=pending.id, user_id=REVIEWER, approve=True)
    best = memory.recall(QUESTION).best
    assert best is not None and best.answer == ANSWER and best.approved_by == REVIEWER


def test_the_latest_approved_correction_of_a_question_wins(engine, memory, feedback):
    feedback.correct(interaction_id=_asked(engine), user_id=REVIEWER, text="Ask your manager.")
    # The same question asked again and corrected again: one entry, the newer answer.
    feedback.correct(interaction_id=_asked(engine, QUESTION), user_id=REVIEWER, text=ANSWER)

    hits = memory.search(QUESTION, limit=5)
    assert [hit.answer for hit in hits if hit.score > 0.9] == [ANSWER]
    with session_scope(engine) as session:
        entries = session.exec(select(MemoryEntry)).all()
    assert len(entries) == 1 and entries[0].answer == ANSWER


def test_retiring_an_entry_removes_it_at_once_in_every_process(engine, memory, feedback, other_process):
    feedback.correct(interaction_id=_asked(engine), user_id=REVIEWER, text=ANSWER)
    assert other_process.recall(QUESTION).best is not None  # the other process sees the new entry

    entry_id = memory.recall(QUESTION).hits[0].entry_id
    with session_scope(engine) as session:
        entry = memory_repo.get_entry(session=session, entry_id=entry_id)
        assert entry is not None
        memory_repo.retire(session=session, entry=entry, by=REVIEWER)
        session.commit()

    assert memory.recall(QUESTION).hits == []
    assert other_process.recall(QUESTION).hits == []
    with session_scope(engine) as session:
        retired = memory_repo.get_entry(session=session, entry_id=entry_id)
    assert retired is not None and retired.status == MemoryStatus.retired


def test_an_edit_in_one_process_is_what_the_other_serves(engine, memory, feedback, other_process):
    feedback.correct(interaction_id=_asked(engine), user_id=REVIEWER, text=ANSWER)
    assert other_process.recall(QUESTION).best is not None
    entry_id = memory.recall(QUESTION).hits[0].entry_id
    with session_scope(engine) as session:
        entry = memory_repo.get_entry(session=session, entry_id=entry_id)
        assert entry is not None
        memory_repo.edit_answer(session=session, entry=entry, answer="Use the IT portal.", editor="U_OLGA")
        session.commit()

    best = other_process.recall(QUESTION).best
    assert best is not None and best.answer == "Use the IT portal." and best.approved_by == "U_OLGA"


def test_memory_off_serves_nothing(engine, feedback):
    feedback.correct(interaction_id=_asked(engine), user_id=REVIEWER, text=ANSWER)
    off = ReviewedMemory(engine=engine, settings=MemorySettings(enabled=False))
    assert off.recall(QUESTION).hits == []


def test_a_change_committed_after_a_newer_one_is_not_skipped(engine, memory, monkeypatch):
    """Two writers can commit out of stamp order; the index looks back over a window, so the older stamp counts."""
    import serving.memory as memory_module

    monkeypatch.setattr(memory_module, "LATE_COMMIT_RECHECK_S", 0.0)  # look back on every lookup, not every second
    vector = embed([QUESTION])[0].tobytes()
    now = utcnow()

    def stored(answer: str, wording: str, stamp: datetime) -> None:
        with session_scope(engine) as session:
            entry = MemoryEntry(
                answer=answer, approved_by=REVIEWER, approved_at=stamp, created_at=stamp, updated_at=stamp
            )
            session.add(entry)
            session.flush()
            assert entry.id is not None
            vectors = vector if wording == QUESTION else embed([wording])[0].tobytes()
            session.add(MemoryWording(entry_id=entry.id, text=wording, embedding=vectors))
            session.commit()

    stored("Newer, committed first.", "What is the guest Wi-Fi called?", now)
    assert memory.recall(QUESTION).hits == []  # loaded up to the newer stamp
    stored(ANSWER, QUESTION, now - timedelta(seconds=2))  # stamped earlier, committed later

    best = memory.recall(QUESTION).best
    assert best is not None and best.answer == ANSWER
    assert memory._index.size == 2  # each wording once: the look-back reloads nothing twice
