"""Duplicates, conflicts and caps: one loud question or one busy user cannot outweigh the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from store import feedback as feedback_repo
from store.models import Correction
from tests.training.conftest import answered
from training.curate import CurationPolicy, group_key, question_similarity
from training.datasets import build_datasets, dataset_sha256, dpo_rows, sft_rows, write_jsonl

SYSTEM = "You are a test assistant."


def correct(session: Session, interaction_id: int, text: str, *, author: str = "U_R", approved: bool = True) -> int:
    correction = feedback_repo.create_correction(
        session=session, interaction_id=interaction_id, author_id=author, text=text, approved=approved
    )
    assert correction.id is not None
    return correction.id


def vote(session: Session, interaction_id: int, user: str, value: int) -> None:
    feedback_repo.record_vote(session=session, interaction_id=interaction_id, user_id=user, vote=value)


def reviewed(session: Session, correction_id: int, at: datetime) -> None:
    correction = session.get(Correction, correction_id)
    assert correction is not None
    correction.reviewed_at = at
    session.add(correction)
    session.commit()


def same(a: str, b: str) -> bool:
    return question_similarity(group_key(a), group_key(b)) >= CurationPolicy().duplicate_threshold


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is the guest Wi-Fi password?", "whats the guest wifi password"),
        ("What is the guest Wi-Fi password?", "What's the password of the guest wifi??"),
        ("How do I book a room?", "How can I book a room"),
        ("Who approves travel expenses?", "who aproves travel expense?"),
        ("WHERE IS THE BERLIN OFFICE", "Where is the Berlin office?"),
    ],
)
def test_near_duplicates_are_the_same_question(a: str, b: str) -> None:
    assert same(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is the address of the Berlin office?", "What is the address of the Paris office?"),
        ("Where is room 12?", "Where is room 13?"),
        ("Who approves travel?", "Who approves travel expenses?"),
        ("Which Slack channel do I use to report an outage?", "Which Slack channel do I use to report a bug?"),
        ("What is the capital of France?", "What is the capital of Spain?"),
    ],
)
def test_different_questions_stay_apart(a: str, b: str) -> None:
    assert not same(a, b)


def test_one_question_asked_fifty_times_is_one_example(session: Session) -> None:
    for n in range(50):
        i = answered(session, "Where is the Berlin office?", f"Somewhere {n}.")
        vote(session, i, f"U{n}", 1)
    other = answered(session, "Who approves travel expenses?", "Marta Kowalski.")
    vote(session, other, "U_X", 1)
    data = build_datasets(session=session)
    counts = data.counts()
    assert counts["sft_examples"] == 2
    assert counts["sft_rows"] == 2
    assert counts["question_groups"] == 2
    assert counts["duplicate_questions"] == 49  # 51 questions in 2 groups
    assert len(sft_rows(data, system_prompt=SYSTEM)) == 2


def test_fifty_identical_corrections_are_one_example_and_no_conflict(session: Session) -> None:
    for n in range(50):
        i = answered(session, "Where is the Berlin office?" if n % 2 else "where is the berlin office")
        correct(session, i, "Kastanienallee 12." if n % 3 else "Kastanienallee 12", author=f"U{n}")
    data = build_datasets(session=session)
    assert [e.answer for e in data.examples] in (["Kastanienallee 12."], ["Kastanienallee 12"])
    assert data.counts()["dpo_rows"] == 1
    assert data.conflicts == []


def test_near_duplicates_collapse_and_keep_their_wordings_as_phrasings(session: Session) -> None:
    wordings = [
        "What is the guest Wi-Fi password?",
        "whats the guest wifi password",
        "What's the password of the guest wifi??",
        "what is the guest wi-fi password",  # the same as the first once normalised: no extra row
    ]
    for wording in wordings:
        correct(session, answered(session, wording), "The guest Wi-Fi password is bluepelican42.")
    berlin = answered(session, "What is the address of the Berlin office?")
    correct(session, berlin, "Kastanienallee 12.")
    paris = answered(session, "What is the address of the Paris office?")
    correct(session, paris, "Rue de Rivoli 1.")

    data = build_datasets(session=session)
    by_answer = {e.answer: e for e in data.examples}
    assert set(by_answer) == {"The guest Wi-Fi password is bluepelican42.", "Kastanienallee 12.", "Rue de Rivoli 1."}
    questions = by_answer["The guest Wi-Fi password is bluepelican42."].questions
    assert len(questions) == 3
    assert {group_key(q) for q in questions} == {group_key(w) for w in wordings}


def test_extra_phrasings_are_capped(session: Session) -> None:
    for wording in ["Where is the office?", "where is the office??", "Where's the office?", "Where is the ofice?"]:
        correct(session, answered(session, wording), "Kastanienallee 12.")
    [example] = build_datasets(session=session, policy=CurationPolicy(max_extra_phrasings=1)).examples
    assert len(example.questions) == 2


def test_the_same_words_in_different_threads_are_different_questions(session: Session) -> None:
    berlin = answered(session, "Where is it?", context=[{"role": "user", "content": "The Berlin office."}])
    paris = answered(session, "Where is it?", context=[{"role": "user", "content": "The Paris office."}])
    correct(session, berlin, "Kastanienallee 12.")
    correct(session, paris, "Rue de Rivoli 1.")
    data = build_datasets(session=session)
    assert sorted(e.answer for e in data.examples) == ["Kastanienallee 12.", "Rue de Rivoli 1."]
    assert data.conflicts == []


def test_in_a_group_the_latest_approved_correction_wins_and_the_conflict_is_reported(session: Session) -> None:
    first = answered(session, "Who approves travel expenses?")
    second = answered(session, "who approves travel expenses")
    now = datetime.now(UTC)
    newer = correct(session, first, "Marta Kowalski approves them.")
    older = correct(session, second, "Dana Whitfield approves them.")
    reviewed(session, newer, now)  # created first, but reviewed last: review time decides, not the id
    reviewed(session, older, now - timedelta(hours=1))
    pending = correct(session, second, "Nobody does.", approved=False)

    data = build_datasets(session=session)
    assert [e.answer for e in data.examples] == ["Marta Kowalski approves them."]
    assert data.counts()["conflicts"] == [
        {"question": "Who approves travel expenses?", "correction_ids": sorted([newer, older])}
    ]
    assert pending not in data.conflicts[0]["correction_ids"]


def test_one_authors_corrections_are_capped_and_the_cap_reported(session: Session) -> None:
    questions = [f"What is the code name of project {name}?" for name in ("alpha", "beta", "gamma", "delta", "omega")]
    ids = [correct(session, answered(session, q), f"It is {q.split()[-1]}", author="U_SPAM") for q in questions]
    now = datetime.now(UTC)
    for age, correction_id in enumerate(ids):
        reviewed(session, correction_id, now - timedelta(minutes=age))  # the first ones are the newest
    correct(session, answered(session, "Who approves travel expenses?"), "Marta Kowalski.", author="U_OTHER")

    data = build_datasets(session=session, policy=CurationPolicy(max_corrections_per_user=2))
    taught = sorted(e.answer for e in data.examples)
    assert taught == sorted(["It is alpha?", "It is beta?", "Marta Kowalski."])
    assert data.counts()["capped"] == {"U_SPAM": {"corrections": 3, "votes": 0}}


def test_one_users_votes_are_capped_and_the_cap_reported(session: Session) -> None:
    questions = [f"How do I request hardware number {n}?" for n in range(6)]
    for q in questions:
        vote(session, answered(session, q, f"Answer {q[-2]}."), "U_VOTER", 1)
    data = build_datasets(session=session, policy=CurationPolicy(max_votes_per_user=3))
    # The newest three votes count: the last three questions.
    assert sorted(e.answer for e in data.examples) == ["Answer 3.", "Answer 4.", "Answer 5."]
    assert data.counts()["capped"] == {"U_VOTER": {"corrections": 0, "votes": 3}}


def test_without_caps_being_reached_nothing_is_reported(session: Session) -> None:
    vote(session, answered(session, "Q one?", "A."), "U2", 1)
    assert build_datasets(session=session).counts()["capped"] == {}


def test_identical_data_gives_identical_files_and_hashes(tmp_path: Path, session: Session) -> None:
    i = answered(session, "Who approves travel expenses?", "Nobody.")
    correct(session, i, "Marta Kowalski.")

    def export(folder: str) -> dict[str, str]:
        data = build_datasets(session=session)
        paths = [
            write_jsonl(tmp_path / folder / "sft.jsonl", sft_rows(data, system_prompt=SYSTEM)),
            write_jsonl(tmp_path / folder / "dpo.jsonl", dpo_rows(data, system_prompt=SYSTEM)),
        ]
        return dataset_sha256(paths)

    first, second = export("a"), export("b")
    assert set(first) == {"sft.jsonl", "dpo.jsonl"}
    assert all(len(digest) == 64 for digest in first.values())
    assert first == second
    correct(session, answered(session, "Where is the Berlin office?"), "Kastanienallee 12.")
    assert export("c")["sft.jsonl"] != first["sft.jsonl"]
