"""How reviewed answers enter a prompt (serving, /v1 and the gate share `with_reviewed`)."""

from __future__ import annotations

from datetime import UTC, datetime

from serving.answers import build_messages, with_reviewed
from serving.memory import MemoryHit


def hit(entry_id: int, wording: str, answer: str, score: float) -> MemoryHit:
    return MemoryHit(
        entry_id=entry_id,
        score=score,
        wording=wording,
        answer=answer,
        approved_by="U_RITA",
        approved_at=datetime(2026, 11, 12, tzinfo=UTC),
    )


LAPTOP = hit(1, "How do I get a laptop?", "Ask in #it-laptops.", 0.7)
TRAVEL = hit(2, "Who approves travel?", "Marta Kowalski does.", 0.6)


def test_without_a_hit_the_prompt_is_exactly_what_it_was() -> None:
    plain = build_messages(system_prompt="S", context=[], question="What is the capital of France?")
    assert plain == [{"role": "system", "content": "S"}, {"role": "user", "content": "What is the capital of France?"}]
    assert (
        build_messages(system_prompt="S", context=[], question="What is the capital of France?", reviewed=[]) == plain
    )


def test_the_best_answer_is_noted_in_the_system_prompt_and_each_is_an_earlier_exchange() -> None:
    context = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    messages = build_messages(system_prompt="S", context=context, question="laptop?", reviewed=[LAPTOP, TRAVEL])
    assert messages == [
        {"role": "system", "content": "S\n\nReviewed answer: Ask in #it-laptops."},
        {"role": "user", "content": "Who approves travel?"},
        {"role": "assistant", "content": "Marta Kowalski does."},
        {"role": "user", "content": "How do I get a laptop?"},  # the best, nearest the question
        {"role": "assistant", "content": "Ask in #it-laptops."},
        *context,
        {"role": "user", "content": "laptop?"},
    ]


def test_a_conversation_without_a_system_prompt_gets_one_for_the_note() -> None:
    messages = with_reviewed([{"role": "user", "content": "laptop?"}], [LAPTOP])
    assert messages[0] == {"role": "system", "content": "Reviewed answer: Ask in #it-laptops."}
    assert messages[-1] == {"role": "user", "content": "laptop?"}
