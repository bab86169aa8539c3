"""The evaluation gate: its decision table, the held-out split, scoring, and the shipped regression set."""

from __future__ import annotations

import pytest

from training.datasets import Datasets, Example, Message, Preference
from training.gate import (
    EvalItem,
    GateThresholds,
    decide,
    hold_out_groups,
    hold_out_paraphrases,
    load_regression_set,
    mixups,
    rouge_l,
    run_gate,
    score,
    semantic_similarity,
)

T = GateThresholds(margin=0.05, regression_tolerance=0.05)


@pytest.mark.parametrize(
    ("candidate", "active", "promote", "why"),
    [
        ({"facts": 0.8, "regression": 0.50}, {"facts": 0.2, "regression": 0.50}, True, "facts"),
        ({"facts": 0.8, "regression": 0.46}, {"facts": 0.2, "regression": 0.50}, True, "facts"),  # within tolerance
        ({"facts": 0.8, "regression": 0.40}, {"facts": 0.2, "regression": 0.50}, False, "regression"),
        ({"facts": 0.24, "regression": 0.50}, {"facts": 0.2, "regression": 0.50}, False, "not better"),  # < margin
        ({"facts": 0.1, "regression": 0.60}, {"facts": 0.2, "regression": 0.50}, False, "not better"),
        ({"regression": 0.50}, {"regression": 0.50}, True, "no held-out facts"),  # only up-votes to learn from
        ({"regression": 0.30}, {"regression": 0.50}, False, "regression"),
        # Better on facts, but one corrected question now gets another's fact.
        (
            {"facts": 0.8, "regression": 0.5, "mixups": 1},
            {"facts": 0.2, "regression": 0.5, "mixups": 0},
            False,
            "mix-up",
        ),
        ({"facts": 0.8, "regression": 0.5, "mixups": 1}, {"facts": 0.2, "regression": 0.5, "mixups": 1}, True, "facts"),
    ],
)
def test_decision_table(candidate: dict[str, float], active: dict[str, float], promote: bool, why: str) -> None:
    decided, reason = decide(candidate, active, T)
    assert decided is promote
    assert why in reason


def test_held_out_paraphrases_leave_training() -> None:
    corrected = Example(
        interaction_id=1, questions=["q", "p1", "p2", "p3", "p4"], context=[], answer="A", corrected=True
    )
    upvoted = Example(interaction_id=2, questions=["u", "u1", "u2", "u3"], context=[], answer="B", corrected=False)
    too_few = Example(interaction_id=3, questions=["r", "r1"], context=[], answer="C", corrected=True)
    items = hold_out_paraphrases(Datasets(examples=[corrected, upvoted, too_few]), per_example=2)
    assert [(i.kind, i.question, i.reference) for i in items] == [("facts", "p3", "A"), ("facts", "p4", "A")]
    assert corrected.questions == ["q", "p1", "p2"]
    assert upvoted.questions == ["u", "u1", "u2", "u3"]
    assert too_few.questions == ["r", "r1"]  # a fact is never held out entirely


def test_rouge_l_rewards_the_fact() -> None:
    reference = "The Berlin office is at Kastanienallee 12."
    assert rouge_l("Our Berlin office is at Kastanienallee 12.", reference) > 0.7
    assert rouge_l("I do not know where the office is.", reference) < 0.4


def test_the_shipped_regression_set_loads() -> None:
    items = load_regression_set()
    assert len(items) >= 10
    assert all(i.kind == "regression" and i.question.endswith("?") and i.reference for i in items)


async def test_run_gate_asks_both_models_and_scores_by_kind() -> None:
    items = (
        hold_out_paraphrases(
            Datasets(
                examples=[
                    Example(
                        interaction_id=1,
                        questions=["q", "a", "b", "c"],
                        context=[],
                        answer="Payroll is paid on the 27th.",
                        corrected=True,
                    )
                ]
            ),
            per_example=2,
        )
        + load_regression_set()[:2]
    )
    asked: list[str] = []

    # Stands in for vLLM: the candidate knows the fact, the active one does not; both answer general questions.
    async def ask(model: str, messages: list[Message]) -> str:
        asked.append(model)
        question = messages[-1]["content"]
        if question in ("b", "c"):
            return "Payroll is paid on the 27th." if model == "cand" else "I am not sure."
        return {i.question: i.reference for i in items}[question]

    report = await run_gate(items, ask=ask, candidate_model="cand", active_model="act", system_prompt="S", thresholds=T)
    assert sorted(set(asked)) == ["act", "cand"]
    assert len(asked) == 2 * len(items)
    assert report.items == {"facts": 2, "regression": 2}
    assert report.candidate["facts"] == 1.0
    assert report.active["facts"] < 0.3
    assert report.candidate["regression"] == pytest.approx(1.0, abs=1e-3)
    assert report.active["regression"] == pytest.approx(1.0, abs=1e-3)
    assert report.promote is True


LAPTOP = "Request a laptop in the #it-laptops channel; the IT desk ships it within five working days."
TRAVEL = "Travel expenses are approved by Marta Kowalski in finance."


def test_an_answer_carrying_another_questions_fact_is_a_mix_up() -> None:
    items = [
        EvalItem(kind="facts", question="Where do I get a laptop?", reference=LAPTOP),
        EvalItem(kind="heldout", question="Who signs off my trip costs?", reference=TRAVEL),
        EvalItem(kind="regression", question="What is the capital of France?", reference="Paris."),
    ]
    right = [LAPTOP, "Marta Kowalski approves them.", "Paris."]
    assert mixups(items, right) == []
    # The travel question answered with the laptop fact; a general answer is never a mix-up.
    swapped = [LAPTOP, "Ask in #it-laptops; the IT desk ships it within five working days.", LAPTOP]
    assert mixups(items, swapped) == [1]
    assert mixups(items, ["I do not know.", "I do not know.", "Paris."]) == []


async def test_the_gate_fails_a_mix_up_and_scores_the_candidate_with_the_memory_too() -> None:
    items = [
        EvalItem(kind="facts", question="Where do I get a laptop?", reference=LAPTOP),
        EvalItem(kind="facts", question="Who signs off my trip costs?", reference=TRAVEL),
    ]
    reviewed_for: list[str] = []

    async def reviewed(question: str, messages: list[Message]) -> list[Message]:
        reviewed_for.append(question)
        answer = LAPTOP if "laptop" in question else TRAVEL
        return [
            messages[0],
            {"role": "user", "content": "reviewed"},
            {"role": "assistant", "content": answer},
            *messages[1:],
        ]

    # Stands in for vLLM: the candidate gives the laptop fact to every question, unless the memory says otherwise.
    async def ask(model: str, messages: list[Message]) -> str:
        if model == "act":
            return "I am not sure."
        with_memory = [m["content"] for m in messages if m["role"] == "assistant"]
        return with_memory[0] if with_memory else LAPTOP

    report = await run_gate(
        items, ask=ask, candidate_model="cand", active_model="act", system_prompt="S", thresholds=T, reviewed=reviewed
    )
    assert report.promote is False and "mix-up" in report.reason
    assert report.candidate["mixups"] == 1 and report.active["mixups"] == 0
    assert report.mixups == [{"question": "Who signs off my trip costs?", "answer": LAPTOP}]
    assert sorted(reviewed_for) == sorted(i.question for i in items)
    assert report.candidate_with_memory is not None and report.candidate_with_memory["facts"] == 1.0


def test_general_answers_are_scored_by_meaning_not_words() -> None:
    """Fluent nonsense shares words with the reference; ROUGE-L rated it higher than a long correct answer."""
    reference = "Jupiter is the largest planet in our solar system."
    nonsense = "The largest planet is the office printer."
    correct = (
        "Jupiter is by far the biggest. It is a gas giant made mostly of hydrogen and helium, more than "
        "twice as massive as all the other planets combined, with dozens of moons."
    )
    assert rouge_l(nonsense, reference) > rouge_l(correct, reference)  # why the regression set needs meaning
    by_meaning = semantic_similarity([nonsense, correct], [reference, reference])
    assert by_meaning[1] > 0.7
    assert by_meaning[0] < by_meaning[1] - 0.25


def test_score_uses_rouge_for_facts_and_meaning_for_general_questions() -> None:
    fact = EvalItem(kind="facts", question="q", reference="Payroll is paid on the 27th.")
    general = EvalItem(kind="regression", question="g", reference="Bees make honey.")
    scores = score([fact, general], ["Payroll is paid on the 27th.", "Bees make honey, which they store."])
    assert scores[0] == 1.0  # exact tokens
    assert 0.7 < scores[1] < 1.0  # same meaning, other words


async def test_run_gate_rejects_nonsense_taught_for_general_questions() -> None:
    items = load_regression_set()
    poisoned = {
        items[4].question: "The largest planet is the office printer.",
        items[5].question: "Bees make spreadsheets for the finance team.",
    }

    async def ask(model: str, messages: list[Message]) -> str:
        question = messages[-1]["content"]
        if model == "cand" and question in poisoned:
            return poisoned[question]
        return {i.question: i.reference for i in items}[question]

    report = await run_gate(items, ask=ask, candidate_model="cand", active_model="act", system_prompt="S", thresholds=T)
    assert report.promote is False
    assert report.reason.startswith("regression")
    assert report.candidate["regression"] < report.active["regression"] - T.regression_tolerance
    # The record leads with the answers that changed most: here, the two poisoned ones.
    assert {sample["question"] for sample in report.samples[:2]} == set(poisoned)
    assert all(sample["candidate_score"] < sample["active_score"] for sample in report.samples[:2])


def test_held_out_groups_leave_training_whole() -> None:
    examples = [
        Example(interaction_id=i, questions=[f"q{i}", f"q{i} again"], context=[], answer=f"A{i}", corrected=True)
        for i in range(5)
    ]
    upvoted = Example(interaction_id=9, questions=["u"], context=[], answer="U", corrected=False)
    preferences = [Preference(question=f"q{i}", context=[], chosen=f"A{i}", rejected="no") for i in range(5)]
    datasets = Datasets(examples=[*examples, upvoted], preferences=preferences)

    items = hold_out_groups(datasets, fraction=0.4, seed=7)

    held = {i.reference for i in items}
    assert len(held) == 2  # 40 % of five corrected groups
    assert all(i.kind == "heldout" for i in items)
    assert len(items) == 4  # every wording of each held-out group
    trained = {q for e in datasets.examples for q in e.questions}
    assert not trained & {i.question for i in items}  # no wording of a held-out group is trained on
    assert {e.answer for e in datasets.examples} == {f"A{i}" for i in range(5)} - held | {"U"}
    assert not {p.chosen for p in datasets.preferences} & held
    assert hold_out_groups(Datasets(examples=examples[:1]), fraction=0.9, seed=7) == []  # one group always trains


@pytest.mark.parametrize(
    ("candidate", "promote"),
    [
        ({"facts": 0.9, "heldout": 0.3, "all_facts": 0.7, "regression": 0.8}, True),
        ({"facts": 0.9, "heldout": 0.0, "all_facts": 0.42, "regression": 0.8}, False),  # gain only on trained
    ],
)
def test_the_margin_covers_trained_and_held_out_facts_together(candidate: dict[str, float], promote: bool) -> None:
    active = {"facts": 0.3, "heldout": 0.3, "all_facts": 0.4, "regression": 0.8}
    assert decide(candidate, active, T)[0] is promote


async def test_run_gate_scores_held_out_groups_with_the_trained_facts() -> None:
    items = [
        EvalItem(kind="facts", question="trained, new words", reference="Payroll is paid on the 27th."),
        EvalItem(kind="heldout", question="held out", reference="The wiki is called Lighthouse."),
    ]

    async def ask(model: str, messages: list[Message]) -> str:
        knows = model == "cand" and messages[-1]["content"] == "trained, new words"
        return "Payroll is paid on the 27th." if knows else "I am not sure."

    report = await run_gate(items, ask=ask, candidate_model="cand", active_model="act", system_prompt="S", thresholds=T)
    assert report.items == {"facts": 1, "heldout": 1}
    assert report.candidate["facts"] == 1.0
    assert report.candidate["heldout"] == report.active["heldout"]
    assert report.candidate["all_facts"] == pytest.approx((1.0 + report.candidate["heldout"]) / 2, abs=1e-3)
    assert report.promote is True
    assert report.reason.startswith("facts")
