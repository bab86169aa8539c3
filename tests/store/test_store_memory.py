"""The memory of reviewed answers on SQLite and PostgreSQL, with the real MiniLM embedder.

Two `ReviewedMemory` objects with their own engines share nothing but the database, as two service processes do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import col, select, text

from serving.access import AccessPolicy
from serving.feedback import FeedbackService
from serving.memory import MemorySettings, ReviewedMemory
from serving.memory_paraphrases import MemoryParaphraser
from store import memory as memory_repo
from store.db import make_engine, session_scope
from store.interactions import create_interaction
from store.models import MemoryEntry, MemoryMode, MemoryStatus, MemoryWording, WordingSource, utcnow
from training.augment import add_paraphrases
from training.datasets import Datasets, Example
from training.embedder import embed
from training.redact import Redactor

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


# --- Paraphrases written by the base model, kept with their entry -----------------------------------------------


class StubModel:
    """Stands in for the served base model (its real output is measured in bench/memory.py); counts requests."""

    def __init__(self, candidates: list[str]) -> None:
        self.candidates = candidates
        self.requests: list[int] = []

    async def generate(self, messages: list[dict[str, str]], count: int) -> list[str]:
        self.requests.append(count)
        return self.candidates


LAPTOP_PARAPHRASES = [
    "How can I get a new laptop for work?",
    "How do I bake bread?",  # off topic: refused
    "How do I get a new laptop? password: hunter2-Xy9!",  # a credential: never stored
    "How do I get a new laptop from jane.doe@example.com?",  # personal data redaction would remove
    "Where do I get a new laptop?",
]


def _paraphrasing(engine: Engine, model: StubModel) -> tuple[ReviewedMemory, FeedbackService, MemoryParaphraser]:
    paraphraser = MemoryParaphraser(engine=engine, generate=model.generate, count=4, redactor=Redactor())
    memory = ReviewedMemory(engine=engine, settings=MemorySettings(), paraphraser=paraphraser)
    feedback = FeedbackService(engine=engine, access=AccessPolicy(reviewers=frozenset({REVIEWER})), memory=memory)
    return memory, feedback, paraphraser


async def _settled(paraphraser: MemoryParaphraser) -> None:
    for _ in range(200):
        await asyncio.sleep(0.05)
        if paraphraser.idle:
            return
    raise AssertionError("the paraphraser did not finish")


async def test_an_approval_is_paraphrased_once_in_one_request_after_its_commit(engine, other_process):
    model = StubModel(LAPTOP_PARAPHRASES)
    _, feedback, paraphraser = _paraphrasing(engine, model)
    worker = asyncio.create_task(paraphraser.run())
    try:
        await asyncio.to_thread(feedback.correct, interaction_id=_asked(engine), user_id=REVIEWER, text=ANSWER)
        await _settled(paraphraser)
        # The same question approved again (a later answer) has no new wording: nothing more to write.
        await asyncio.to_thread(feedback.correct, interaction_id=_asked(engine), user_id=REVIEWER, text=ANSWER + "!")
        await _settled(paraphraser)
    finally:
        worker.cancel()

    assert model.requests == [12]  # one request of n = 3 x 4 samples
    with session_scope(engine) as session:
        rows = session.exec(select(MemoryWording).order_by(col(MemoryWording.id))).all()
        entry_id = rows[0].entry_id
        assert [(w.text, w.source) for w in rows] == [
            (QUESTION, WordingSource.asked),
            ("How can I get a new laptop for work?", WordingSource.paraphrase),
            ("Where do I get a new laptop?", WordingSource.paraphrase),
        ]
        # Reviewers see the asked wordings; the paraphrases are asked for by name.
        assert memory_repo.wordings_of(session=session, entry_id=entry_id) == [QUESTION]
        assert memory_repo.entries_without_paraphrases(session=session) == []
    # Another process loads them with the entry (its change stamp moved) and matches a question by them; the hit
    # shows the question a reviewer corrected, not the paraphrase.
    hit = other_process.search("Where do I get a new laptop?", limit=1)[0]
    assert hit.entry_id == entry_id and hit.score > 0.99 and hit.answer == ANSWER + "!"
    assert hit.wording == QUESTION


async def test_the_worker_paraphrases_entries_left_without_any_and_a_failure_is_logged(engine, caplog):
    memory, feedback, _ = _paraphrasing(engine, StubModel([]))
    feedback.correct(interaction_id=_asked(engine), user_id=REVIEWER, text=ANSWER)  # no worker runs yet

    async def broken(messages: list[dict[str, str]], count: int) -> list[str]:
        raise ConnectionError("vLLM is down")

    failing = MemoryParaphraser(engine=engine, generate=broken, count=4, redactor=Redactor())
    worker = asyncio.create_task(failing.run())
    await _settled(failing)
    worker.cancel()
    assert "memory.paraphrase_failed" in caplog.text
    assert memory.recall(QUESTION).mode == MemoryMode.direct  # the entry serves all the same

    model = StubModel(LAPTOP_PARAPHRASES)
    later = MemoryParaphraser(engine=engine, generate=model.generate, count=4, redactor=Redactor())
    worker = asyncio.create_task(later.run())
    await _settled(later)
    worker.cancel()
    assert model.requests == [12]
    with session_scope(engine) as session:
        assert memory_repo.entries_without_paraphrases(session=session) == []


async def test_a_cycle_takes_stored_paraphrases_and_writes_only_for_groups_without(engine):
    model = StubModel(LAPTOP_PARAPHRASES)
    _, feedback, paraphraser = _paraphrasing(engine, model)
    feedback.correct(interaction_id=_asked(engine), user_id=REVIEWER, text=ANSWER)
    with session_scope(engine) as session:
        entry_id = session.exec(select(MemoryEntry.id)).one()
    assert entry_id is not None

    def datasets() -> Datasets:
        laptop = Example(
            interaction_id=1, questions=[QUESTION], context=[], answer=ANSWER, corrected=True, memory_entry_id=entry_id
        )
        # A group corrected before the memory existed has no entry: the model writes for it every cycle.
        orphan = Example(
            interaction_id=2, questions=["Who is the security officer?"], context=[], answer="B", corrected=True
        )
        return Datasets(examples=[laptop, orphan])

    cycle_model = StubModel(["Who is our security officer?"])
    first, second = datasets(), datasets()
    for data in (first, second):
        await add_paraphrases(
            data, per_question=4, generate=cycle_model.generate, seed=1, stored=paraphraser.paraphrases_of
        )

    # The entry was paraphrased once, by the memory (on the first cycle: no worker ran); the group without an
    # entry asked the cycle's model each time.
    assert model.requests == [12]
    assert cycle_model.requests == [12, 12]
    for data in (first, second):
        laptop, orphan = data.examples
        assert laptop.questions[1:3] == ["How can I get a new laptop for work?", "Where do I get a new laptop?"]
        assert len(laptop.questions) == 5  # rule-based rewordings fill up to 4
        assert orphan.questions[1] == "Who is our security officer?"
    assert first.examples[0].questions == second.examples[0].questions


async def test_a_paraphrase_that_drifted_never_groups_another_question_with_the_entry(engine):
    model = StubModel(["How do I get a new laptop bag?"])  # on topic by its words, yet another question
    memory, feedback, paraphraser = _paraphrasing(engine, model)
    feedback.correct(interaction_id=_asked(engine), user_id=REVIEWER, text=ANSWER)
    with session_scope(engine) as session:
        entry_id = session.exec(select(MemoryEntry.id)).one()
    assert entry_id is not None
    assert await paraphraser.paraphrases_of([entry_id]) == {entry_id: ["How do I get a new laptop bag?"]}

    bag = "Laptop bags are handed out at the IT desk on the 2nd floor."
    feedback.correct(interaction_id=_asked(engine, "How do I get a new laptop bag?"), user_id=REVIEWER, text=bag)

    assert memory.recall(QUESTION).best.answer == ANSWER  # type: ignore[union-attr]
    assert memory.recall("How do I get a new laptop bag?").best.answer == bag  # type: ignore[union-attr]
    with session_scope(engine) as session:
        assert len(session.exec(select(MemoryEntry)).all()) == 2


# --- Where the wordings are searched: pgvector in PostgreSQL where it is installed, else in process --------------


def test_postgresql_with_pgvector_searches_there_and_finds_what_the_exact_search_finds(engine, backend, feedback):
    memory = ReviewedMemory(engine=engine, settings=MemorySettings(pgvector=True))
    if backend == "sqlite":
        assert memory.search_backend == "exact"
        return
    if memory.search_backend != "pgvector":
        with session_scope(engine) as session:
            installed = session.exec(text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).first()
        pytest.skip(
            "pgvector is not installed in this PostgreSQL server: build it from github.com/pgvector/pgvector "
            f"(make && make install, with postgresql-server-dev-15); available={installed is not None}"
        )
    exact = ReviewedMemory(engine=engine, settings=MemorySettings())  # the default: exact search, pgvector or not
    assert exact.search_backend == "exact"
    feedback.correct(interaction_id=_asked(engine), user_id=REVIEWER, text=ANSWER)
    other = "Book meeting rooms in the Roomie app."
    feedback.correct(interaction_id=_asked(engine, "How do I book a meeting room?"), user_id=REVIEWER, text=other)

    for question in ("What's the process to request a new laptop?", "Where do I reserve a room for a meeting?"):
        by_pgvector, by_exact = memory.search(question, limit=2), exact.search(question, limit=2)
        assert [(h.entry_id, h.wording) for h in by_pgvector] == [(h.entry_id, h.wording) for h in by_exact]
        assert [h.score for h in by_pgvector] == pytest.approx([h.score for h in by_exact], abs=1e-4)
    # A wording written after the index loaded gets its vector at the next lookup, in every process.
    third = "Payroll is paid on the 27th of each month."
    feedback.correct(interaction_id=_asked(engine, "When is payday?"), user_id=REVIEWER, text=third)
    assert memory.recall("When is payday?").best.answer == third  # type: ignore[union-attr]
