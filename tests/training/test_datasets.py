"""Dataset building: every rule of training/datasets.py, on a real SQLite store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from serving.access import AccessPolicy
from serving.feedback import FeedbackService
from serving.memory import MemorySettings, ReviewedMemory
from store import feedback as feedback_repo
from store import interactions as interaction_repo
from store import memory as memory_repo
from tests.training.conftest import answered
from training.datasets import (
    Datasets,
    Example,
    Preference,
    build_datasets,
    dpo_rows,
    read_jsonl,
    sft_rows,
    write_jsonl,
)

SYSTEM = "You are a test assistant."


def vote(session: Session, interaction_id: int, user: str, value: int) -> None:
    feedback_repo.record_vote(session=session, interaction_id=interaction_id, user_id=user, vote=value)


def correct(session: Session, interaction_id: int, text: str, *, approved: bool) -> int:
    correction = feedback_repo.create_correction(
        session=session, interaction_id=interaction_id, author_id="U_R", text=text, approved=approved
    )
    assert correction.id is not None
    return correction.id


def test_approved_correction_becomes_sft_pair_and_dpo_preference(session: Session) -> None:
    i = answered(session, "Who approves travel?", "Nobody knows.")
    correct(session, i, "Dana Whitfield approves travel.", approved=True)
    data = build_datasets(session=session)
    [row] = sft_rows(data, system_prompt=SYSTEM)
    assert row["prompt"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Who approves travel?"}]
    assert row["completion"] == [{"role": "assistant", "content": "Dana Whitfield approves travel."}]
    [pref] = dpo_rows(data, system_prompt=SYSTEM)
    assert pref["chosen"][0]["content"] == "Dana Whitfield approves travel."
    assert pref["rejected"][0]["content"] == "Nobody knows."


def test_pending_and_rejected_corrections_never_train(session: Session) -> None:
    pending = answered(session, "Q pending?", "A1")
    correct(session, pending, "pending text", approved=False)
    rejected = answered(session, "Q rejected?", "A2")
    cid = correct(session, rejected, "rejected text", approved=False)
    feedback_repo.review_correction(session=session, correction_id=cid, reviewer_id="U_R", approve=False)
    data = build_datasets(session=session)
    texts = [e.answer for e in data.examples] + [p.chosen for p in data.preferences]
    assert "pending text" not in texts
    assert "rejected text" not in texts
    assert data.counts()["sft_corrections"] == 0


def test_latest_approved_correction_wins(session: Session) -> None:
    i = answered(session, "Where is the office?", "No idea.")
    correct(session, i, "Old address.", approved=True)
    correct(session, i, "Kastanienallee 12.", approved=True)
    data = build_datasets(session=session)
    assert [e.answer for e in data.examples] == ["Kastanienallee 12."]


def test_net_positive_answers_without_corrections_become_sft(session: Session) -> None:
    liked = answered(session, "Capital of France?", "Paris.")
    vote(session, liked, "U2", 1)
    vote(session, liked, "U3", 1)
    vote(session, liked, "U4", -1)
    tied = answered(session, "Tied?", "Maybe.")
    vote(session, tied, "U2", 1)
    vote(session, tied, "U3", -1)
    corrected = answered(session, "Corrected?", "Wrong.")
    vote(session, corrected, "U2", 1)
    correct(session, corrected, "Right.", approved=True)
    under_review = answered(session, "Under review?", "Unsure.")
    vote(session, under_review, "U2", 1)
    correct(session, under_review, "Someone disagrees.", approved=False)

    data = build_datasets(session=session)
    by_answer = {e.answer: e for e in data.examples}
    assert set(by_answer) == {"Paris.", "Right."}
    assert by_answer["Paris."].corrected is False
    assert by_answer["Right."].corrected is True


def test_a_later_vote_replaces_the_earlier_one(session: Session) -> None:
    i = answered(session, "Best editor?", "Vim.")
    vote(session, i, "U2", 1)
    assert [e.answer for e in build_datasets(session=session).examples] == ["Vim."]
    vote(session, i, "U2", -1)
    assert build_datasets(session=session).examples == []


def test_up_and_down_voted_answers_to_the_same_question_become_a_preference(session: Session) -> None:
    good = answered(session, "How do I book a room?", "Use the Rooms app.")
    bad = answered(session, "how do I book a room", "Call the CEO.")
    other = answered(session, "Something else?", "Unrelated.")
    vote(session, good, "U2", 1)
    vote(session, bad, "U2", -1)
    vote(session, other, "U2", -1)
    [pref] = dpo_rows(build_datasets(session=session), system_prompt=SYSTEM)
    assert pref["chosen"][0]["content"] == "Use the Rooms app."
    assert pref["rejected"][0]["content"] == "Call the CEO."


def test_thread_context_is_part_of_the_prompt(session: Session) -> None:
    context = [{"role": "user", "content": "We talk about Berlin."}, {"role": "assistant", "content": "OK."}]
    i = answered(session, "Where is it?", "Somewhere.", context=context)
    correct(session, i, "Kastanienallee 12.", approved=True)
    [row] = sft_rows(build_datasets(session=session), system_prompt=SYSTEM)
    assert [m["content"] for m in row["prompt"]] == [SYSTEM, "We talk about Berlin.", "OK.", "Where is it?"]


def test_failed_interactions_are_not_trained_on(session: Session) -> None:
    interaction = interaction_repo.create_interaction(session=session, user_id="U1", source="t", question="Q?")
    assert interaction.id is not None
    interaction_repo.record_failure(session=session, interaction_id=interaction.id, error="down", latency_ms=1)
    correct(session, interaction.id, "An answer.", approved=True)
    assert build_datasets(session=session).examples == []


def test_jsonl_round_trip(tmp_path: Path, session: Session) -> None:
    i = answered(session, "Wi-Fi password?", "Unknown.")
    correct(session, i, "bluepelican42", approved=True)
    rows = sft_rows(build_datasets(session=session), system_prompt=SYSTEM)
    path = write_jsonl(tmp_path / "out" / "sft.jsonl", rows)
    assert read_jsonl(path) == rows


def test_keep_new_leaves_what_is_new_and_the_anchors() -> None:
    """The `continue` strategy trains the active adapter on what came after it, and on the anchors."""
    cut = datetime(2026, 11, 1, tzinfo=UTC)
    old = Example(interaction_id=1, questions=["old?"], context=[], answer="A", corrected=True, feedback_at=cut)
    new = Example(
        interaction_id=2,
        questions=["new?", "new, again?"],
        context=[],
        answer="B",
        corrected=True,
        feedback_at=cut + timedelta(minutes=1),
    )
    anchor = Example(interaction_id=None, questions=["sky?"], context=[], answer="Blue.", corrected=False, anchor=True)
    datasets = Datasets(
        examples=[old, new, anchor],
        preferences=[
            Preference(question="old?", context=[], chosen="A", rejected="x"),
            Preference(question="new?", context=[], chosen="B", rejected="y"),
        ],
    )
    datasets.keep_new(since=cut.replace(tzinfo=None))  # SQLite hands back naive UTC
    assert datasets.examples == [new, anchor]
    assert [p.question for p in datasets.preferences] == ["new?"]


def _remembered(session: Session, interaction_id: int, text: str) -> int:
    """A reviewer's correction through the feedback service, so that it becomes a memory entry too."""
    engine = session.get_bind()
    assert isinstance(engine, Engine)
    memory = ReviewedMemory(engine=engine, settings=MemorySettings())
    feedback = FeedbackService(engine=engine, access=AccessPolicy(reviewers=frozenset({"U_R"})), memory=memory)
    feedback.correct(interaction_id=interaction_id, user_id="U_R", text=text)
    entry = memory_repo.entry_of_interaction(session=session, interaction_id=interaction_id)
    assert entry is not None and entry.id is not None
    return entry.id


def test_a_retired_memory_entry_no_longer_trains(session: Session) -> None:
    kept = answered(session, "Who approves travel?", "Nobody knows.")
    retired = answered(session, "What is the Wi-Fi called?", "No idea.")
    _remembered(session, kept, "Dana Whitfield approves travel.")
    entry_id = _remembered(session, retired, "The Wi-Fi is called Pelican.")
    entry = memory_repo.get_entry(session=session, entry_id=entry_id)
    assert entry is not None
    memory_repo.retire(session=session, entry=entry, by="U_R")
    session.commit()

    data = build_datasets(session=session)

    assert [e.answer for e in data.examples] == ["Dana Whitfield approves travel."]
    assert all("Pelican" not in p.chosen for p in data.preferences)
    assert data.counts()["memory_retired"] == 1


def test_an_edited_memory_entry_trains_its_new_answer(session: Session) -> None:
    i = answered(session, "Who approves travel?", "Nobody knows.")
    entry_id = _remembered(session, i, "Dana Whitfield approves travel.")
    entry = memory_repo.get_entry(session=session, entry_id=entry_id)
    assert entry is not None
    memory_repo.edit_answer(session=session, entry=entry, answer="Marta Kowalski approves travel.", editor="U_O")
    session.commit()

    data = build_datasets(session=session)

    [row] = sft_rows(data, system_prompt=SYSTEM)
    assert row["completion"][0]["content"] == "Marta Kowalski approves travel."
    assert data.preferences[0].chosen == "Marta Kowalski approves travel."
    assert data.counts()["memory_newer"] == 1
