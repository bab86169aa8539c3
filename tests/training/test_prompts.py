"""One prompt builder: a long thread is cut the same way when it is answered, trained on and evaluated."""

from __future__ import annotations

from serving.answers import build_messages
from training.datasets import Datasets, Example, Preference, dpo_rows, sft_rows
from training.prompts import MAX_CONTEXT_CHARS

SYSTEM = "You answer briefly."
# Twelve turns of 1,000 characters: more than the budget, so the oldest must go.
THREAD = [{"role": "user" if n % 2 == 0 else "assistant", "content": f"turn {n:02d} " + "x" * 992} for n in range(12)]


def test_a_long_thread_is_trimmed_for_training_exactly_as_for_serving() -> None:
    asked = build_messages(system_prompt=SYSTEM, context=THREAD, question="And now?")
    assert sum(len(m["content"]) for m in asked[1:-1]) <= MAX_CONTEXT_CHARS
    assert asked[1]["content"].startswith("turn 08")  # the newest turns stay, the oldest go

    datasets = Datasets(
        examples=[Example(interaction_id=1, questions=["And now?"], context=THREAD, answer="Done.", corrected=True)],
        preferences=[Preference(question="And now?", context=THREAD, chosen="Done.", rejected="No.")],
    )
    assert sft_rows(datasets, system_prompt=SYSTEM)[0]["prompt"] == asked
    assert dpo_rows(datasets, system_prompt=SYSTEM)[0]["prompt"] == asked


def test_a_short_thread_is_kept_whole() -> None:
    thread = THREAD[-2:]
    assert build_messages(system_prompt=SYSTEM, context=thread, question="Q")[1:-1] == thread
