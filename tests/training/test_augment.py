"""Paraphrase augmentation: model-written candidates are filtered, templates fill the rest."""

from __future__ import annotations

from training.augment import acceptable_paraphrase, add_paraphrases, model_paraphrases, paraphrases
from training.datasets import Datasets, Example, Message, normalise_question


def test_acceptable_paraphrase_keeps_questions_on_topic() -> None:
    original = "Which Slack channel reports outages?"
    assert acceptable_paraphrase(original, "Which Slack channel reports any outages?")
    assert not acceptable_paraphrase(original, "Which Slack channel reports outages?")  # the same
    assert not acceptable_paraphrase(original, "How do I reset my Slack account?")  # off topic
    assert not acceptable_paraphrase(original, "The Slack channel reports outages.")  # not a question


async def test_model_candidates_are_filtered_and_templates_fill_up() -> None:
    calls: list[int] = []

    # Stands in for the served base model, whose own output is tested in the e2e test.
    async def generate(messages: list[Message], count: int) -> list[str]:
        calls.append(count)
        assert "Which Slack channel reports outages?" in messages[-1]["content"]
        return [
            "Which Slack channel announces outages?",
            "How do I bake bread?",
            "Which Slack channel reports outages?",
        ]

    result = await paraphrases("Which Slack channel reports outages?", count=4, generate=generate, seed=1)
    assert result[0] == "Which Slack channel announces outages?"
    assert "How do I bake bread?" not in result
    assert len(result) == 4
    assert len({normalise_question(q) for q in result}) == 4
    assert normalise_question("Which Slack channel reports outages?") not in {normalise_question(q) for q in result}
    assert calls == [12]


async def test_a_failing_model_falls_back_to_templates() -> None:
    async def broken(messages: list[Message], count: int) -> list[str]:
        raise ConnectionError("vLLM is down")

    result = await paraphrases("Where is the Berlin office?", count=3, generate=broken, seed=1)
    assert len(result) == 3


async def test_only_corrected_examples_are_augmented() -> None:
    data = Datasets(
        examples=[
            Example(
                interaction_id=1, questions=["Where is the Berlin office?"], context=[], answer="A", corrected=True
            ),
            Example(interaction_id=2, questions=["What is 2+2?"], context=[], answer="4", corrected=False),
        ]
    )
    added = await add_paraphrases(data, per_question=3, generate=None, seed=7)
    assert added == 3
    assert len(data.examples[0].questions) == 4
    assert data.examples[1].questions == ["What is 2+2?"]


async def test_anchors_pair_general_questions_with_the_base_models_answers() -> None:
    from training.anchors import ANCHOR_QUESTIONS, add_anchors

    asked: list[str] = []

    async def base_answer(question: str) -> str:  # stands in for the served base model
        asked.append(question)
        return "" if question == ANCHOR_QUESTIONS[0] else f"answer to {question}"

    data = Datasets(examples=[])
    added = await add_anchors(data, answer=base_answer)
    assert asked == list(ANCHOR_QUESTIONS)
    assert added == len(ANCHOR_QUESTIONS) - 1  # an empty answer teaches nothing and is dropped
    assert all(e.anchor and not e.corrected for e in data.examples)
    assert data.counts()["sft_anchors"] == added
    assert data.counts()["sft_upvoted"] == 0


async def test_no_request_is_sent_for_zero_paraphrases() -> None:
    # vLLM refuses n=0 with a 400: paraphrases_per_question=0 must not ask the model at all.
    asked: list[int] = []

    async def generate(messages: list[Message], n: int) -> list[str]:
        asked.append(n)
        return []

    assert await model_paraphrases("When is payroll?", count=0, generate=generate) == []
    assert asked == []
