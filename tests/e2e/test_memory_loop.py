"""A correction takes effect at once, with no retrain: the memory of reviewed answers on the real stack.

Real vLLM with the real SmolLM2-135M, the bundled MiniLM, real SQLite; a second service is a separate OS process
(`tuneloop serve`) on the same database, as a company runs several.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from store import memory as memory_repo
from store.db import session_scope
from store.models import Correction, Interaction, MemoryWording
from tests.conftest import ApiCaller, RunningService, ServeProcess
from tests.e2e.memory_facts import FACTS, GENERAL

pytestmark = pytest.mark.slow

TAUGHT = FACTS[:8]
# With no retrain, bench/memory.py measured 75-78% on all twelve facts before paraphrases and 81-83% with them;
# these eight facts hold most of the misses (about 75% here). The goal of 90% is not reached yet.
RECALL_FLOOR = 0.70


def teach(reviewer: ApiCaller, employee: ApiCaller, question: str, answer: str) -> int:
    asked = employee.post("/api/ask", json={"question": question})
    assert asked.status_code == 200, asked.text
    corrected = reviewer.post(f"/api/interactions/{asked.json()['interaction_id']}/corrections", json={"text": answer})
    assert corrected.status_code in (200, 201) and corrected.json()["status"] == "approved", corrected.text
    return int(asked.json()["interaction_id"])


def stored_texts(service: RunningService) -> str:
    """Everything a question or an answer could have been stored as, lower-cased."""
    with session_scope(service.service.services.engine) as session:
        texts = [i.question + " " + (i.answer or "") for i in session.exec(select(Interaction)).all()]
        texts += [c.text for c in session.exec(select(Correction)).all()]
        texts += [w.text for w in session.exec(select(MemoryWording)).all()]
    return "\n".join(texts).lower()


@pytest.fixture
def second_process(service: RunningService, tmp_path: Path) -> Iterator[str]:
    """`tuneloop serve` in its own process, on the first service's database and vLLM server."""
    process = ServeProcess(service.settings, data_dir=tmp_path / "second").wait_ready()
    yield process.url
    process.stop()


def test_a_reviewed_answer_reaches_new_wordings_at_once(service: RunningService) -> None:
    employee, reviewer = ApiCaller(service, "U_EMPLOYEE"), ApiCaller(service, "U_REVIEWER")
    before = {q: employee.post("/api/ask", json={"question": q}).json()["answer"] for q in GENERAL}
    for fact in TAUGHT:
        teach(reviewer, employee, fact.question, fact.answer)
    # Each entry serves at once on its own wording; the base model's paraphrases of it follow in the background.
    paraphraser = service.service.services.memory.paraphraser
    assert paraphraser is not None
    deadline = time.monotonic() + 120
    while not paraphraser.idle and time.monotonic() < deadline:
        time.sleep(0.5)
    assert paraphraser.idle, "the paraphrases of the reviewed questions were not written within 2 minutes"

    # The wordings asked below were never stored anywhere: not as a question, an answer or a memory wording
    # (the paraphrases the base model wrote included).
    stored = stored_texts(service)
    paraphrases = [(fact, p) for fact in TAUGHT for p in fact.paraphrases]
    written = [p for _fact, p in paraphrases if p.lower() in stored]
    assert not written, f"stored, so no longer unseen (the base model may have written one): {written}"

    missed = []
    for fact, paraphrase in paraphrases:
        answer = employee.post("/api/ask", json={"question": paraphrase}).json()
        if fact.key not in answer["answer"].lower():
            missed.append((paraphrase, answer["answer"], answer.get("memory")))
    recall = 1 - len(missed) / len(paraphrases)
    assert recall >= RECALL_FLOOR, f"recall {recall:.0%} < {RECALL_FLOOR:.0%}; missed: {missed}"

    # No entry covers a general question: it is answered exactly as before, with no fact and no memory.
    for question in GENERAL:
        again = employee.post("/api/ask", json={"question": question}).json()
        assert again["answer"] == before[question], question
        assert again["memory"] is None

    # Retiring an entry removes its effect at once.
    laptop = TAUGHT[0]
    direct = employee.post("/api/ask", json={"question": laptop.question}).json()
    assert direct["memory"]["mode"] == "direct" and direct["answer"] == laptop.answer
    with session_scope(service.service.services.engine) as session:
        entry = memory_repo.get_entry(session=session, entry_id=direct["memory"]["entry_id"])
        assert entry is not None
        memory_repo.retire(session=session, entry=entry, by="U_REVIEWER")
        session.commit()
    after = employee.post("/api/ask", json={"question": laptop.question}).json()
    assert after["memory"] is None or after["memory"]["entry_id"] != direct["memory"]["entry_id"]
    assert laptop.key not in after["answer"].lower()


def test_a_second_service_process_answers_with_a_new_entry_within_a_second(
    service: RunningService, second_process: str
) -> None:
    employee, reviewer = ApiCaller(service, "U_EMPLOYEE"), ApiCaller(service, "U_REVIEWER")
    fact = FACTS[-1]
    with httpx.Client(base_url=second_process, headers={"Authorization": f"Bearer {employee.token}"}) as other:
        first = other.post("/api/ask", json={"question": fact.question}, timeout=120).json()
        assert first["memory"] is None and fact.key not in first["answer"].lower()

        teach(reviewer, employee, fact.question, fact.answer)
        approved_at = time.perf_counter()
        answer = other.post("/api/ask", json={"question": fact.question}, timeout=120).json()
        effective_s = time.perf_counter() - approved_at

    assert answer["answer"] == fact.answer and answer["memory"]["mode"] == "direct"
    assert effective_s < 1.0, f"the second process answered with the new entry after {effective_s:.2f} s"
