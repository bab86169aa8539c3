"""The evaluation gate: a candidate adapter goes live only when it beats the active one and forgets nothing.

Two sets of prompts, both answered by the candidate and by the active adapter at temperature 0:
- facts: paraphrases of the corrected questions that were held out of training (new words for trained
  facts), scored against the corrected answer;
- regression: general questions shipped in training/data/regression.jsonl, scored against their
  reference answers (written from the base model's good answers and checked by hand).
Scores are ROUGE-L F1 (Google's rouge-score). The decision table is `decide`.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from training.datasets import Datasets, Message, prompt_messages

REGRESSION_SET = Path(__file__).parent / "data" / "regression.jsonl"
# (model name, messages) -> answer; bound by the composition root to the running vLLM.
Ask = Callable[[str, list[Message]], Awaitable[str]]


@dataclass(frozen=True, kw_only=True)
class EvalItem:
    kind: str  # "facts" or "regression"
    question: str
    reference: str
    context: list[Message] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class GateThresholds:
    margin: float  # candidate's facts score must exceed the active one's by this much
    regression_tolerance: float  # candidate's regression score may fall at most this far below


@dataclass(kw_only=True)
class GateReport:
    candidate: dict[str, float]
    active: dict[str, float]
    items: dict[str, int]
    promote: bool
    reason: str
    samples: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@cache
def _scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(answer: str, reference: str) -> float:
    return float(_scorer().score(reference, answer)["rougeL"].fmeasure)


def load_regression_set(path: Path = REGRESSION_SET) -> list[EvalItem]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [EvalItem(kind="regression", question=r["question"], reference=r["reference"]) for r in rows]


def hold_out_paraphrases(datasets: Datasets, *, per_example: int) -> list[EvalItem]:
    """Move the last `per_example` paraphrases of each corrected example out of training, into the gate."""
    items: list[EvalItem] = []
    for example in datasets.examples:
        if not example.corrected or len(example.questions) <= per_example + 1:
            continue
        held, example.questions = example.questions[-per_example:], example.questions[:-per_example]
        items += [EvalItem(kind="facts", question=q, reference=example.answer, context=example.context) for q in held]
    return items


def decide(candidate: dict[str, float], active: dict[str, float], thresholds: GateThresholds) -> tuple[bool, str]:
    """Promote only when the candidate does not regress and, where there are facts, beats the active by the margin."""
    if "regression" in candidate and candidate["regression"] < active["regression"] - thresholds.regression_tolerance:
        return False, (
            f"regression: general answers scored {candidate['regression']:.3f} against the active "
            f"{active['regression']:.3f} (tolerance {thresholds.regression_tolerance})"
        )
    if "facts" in candidate:
        if candidate["facts"] < active["facts"] + thresholds.margin:
            return False, (
                f"not better: corrected facts scored {candidate['facts']:.3f} against the active "
                f"{active['facts']:.3f} (margin {thresholds.margin})"
            )
        return True, f"facts {active['facts']:.3f} -> {candidate['facts']:.3f}, no regression"
    return True, "no held-out facts to compare; no regression"


async def run_gate(
    items: list[EvalItem],
    *,
    ask: Ask,
    candidate_model: str,
    active_model: str,
    system_prompt: str,
    thresholds: GateThresholds,
    concurrency: int = 8,
) -> GateReport:
    limit = asyncio.Semaphore(concurrency)

    async def answer(model: str, item: EvalItem) -> str:
        async with limit:
            messages = prompt_messages(system_prompt=system_prompt, context=item.context, question=item.question)
            return await ask(model, messages)

    candidate_answers = await asyncio.gather(*(answer(candidate_model, item) for item in items))
    active_answers = await asyncio.gather(*(answer(active_model, item) for item in items))

    def mean_by_kind(answers: list[str]) -> dict[str, float]:
        by_kind: dict[str, list[float]] = {}
        for item, text in zip(items, answers, strict=True):
            by_kind.setdefault(item.kind, []).append(rouge_l(text, item.reference))
        return {kind: round(statistics.fmean(scores), 4) for kind, scores in by_kind.items()}

    candidate, active = mean_by_kind(candidate_answers), mean_by_kind(active_answers)
    promote, reason = decide(candidate, active, thresholds)
    counts = {kind: sum(1 for i in items if i.kind == kind) for kind in candidate}
    samples = [
        {"kind": i.kind, "question": i.question, "candidate": c, "active": a}
        for i, c, a in list(zip(items, candidate_answers, active_answers, strict=True))[:10]
    ]
    return GateReport(candidate=candidate, active=active, items=counts, promote=promote, reason=reason, samples=samples)
