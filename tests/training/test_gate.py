"""The evaluation gate: its decision table, the held-out split, scoring, and the shipped regression set."""

from __future__ import annotations

import pytest

from training.datasets import Datasets, Example, Message
from training.gate import (
    GateThresholds,
    decide,
    hold_out_paraphrases,
    load_regression_set,
    rouge_l,
    run_gate,
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
    assert report.candidate["regression"] == report.active["regression"] == 1.0
    assert report.promote is True
