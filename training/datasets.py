"""Feedback -> training data: SFT pairs and DPO preferences, built from the store.

Rules:
- SFT: every interaction's latest approved correction (question -> corrected answer), and every answer
  with net positive votes that has no approved or pending correction.
- DPO: (question, chosen = approved correction, rejected = the original answer), and for answers to
  the same question, (chosen = an answer with net positive votes, rejected = one with net negative).
- Pending and rejected corrections never train.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import Session

from store import feedback as feedback_repo
from store import interactions as interaction_repo
from store.models import Correction, CorrectionStatus, Interaction

Message = dict[str, str]
Row = dict[str, Any]
SFT_FILENAME = "sft.jsonl"
DPO_FILENAME = "dpo.jsonl"


@dataclass(kw_only=True)
class Example:
    """One taught answer, before it becomes rows: paraphrases are added to `questions` later."""

    interaction_id: int | None  # None for anchor rows, which come from no interaction
    questions: list[str]
    context: list[Message]
    answer: str
    corrected: bool
    anchor: bool = False


@dataclass(kw_only=True)
class Preference:
    question: str
    context: list[Message]
    chosen: str
    rejected: str


@dataclass(kw_only=True)
class Datasets:
    examples: list[Example] = field(default_factory=list)
    preferences: list[Preference] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "sft_examples": len(self.examples),
            "sft_corrections": sum(1 for e in self.examples if e.corrected),
            "sft_upvoted": sum(1 for e in self.examples if not e.corrected and not e.anchor),
            "sft_anchors": sum(1 for e in self.examples if e.anchor),
            "sft_rows": sum(len(e.questions) for e in self.examples),
            "dpo_rows": len(self.preferences),
        }


def normalise_question(text: str) -> str:
    return re.sub(r"[^\w]+", " ", text.lower()).strip()


def build_datasets(*, session: Session) -> Datasets:
    interactions = {i.id: i for i in interaction_repo.list_answered(session=session) if i.id is not None}
    corrections = feedback_repo.list_corrections(session=session)
    totals = feedback_repo.vote_totals(session=session)

    latest_approved: dict[int, Correction] = {}
    has_open_or_approved: set[int] = set()
    for correction in corrections:  # ordered by id, so later approvals overwrite earlier ones
        if correction.status in (CorrectionStatus.approved, CorrectionStatus.pending):
            has_open_or_approved.add(correction.interaction_id)
        if correction.status == CorrectionStatus.approved and correction.interaction_id in interactions:
            latest_approved[correction.interaction_id] = correction

    datasets = Datasets()
    for interaction_id, correction in sorted(latest_approved.items()):
        interaction = interactions[interaction_id]
        datasets.examples.append(_example(interaction, correction.text, corrected=True))
        original = (interaction.answer or "").strip()
        if original and original != correction.text.strip():
            datasets.preferences.append(
                Preference(
                    question=interaction.question,
                    context=interaction.context,
                    chosen=correction.text.strip(),
                    rejected=original,
                )
            )

    liked: dict[str, list[Interaction]] = defaultdict(list)
    disliked: dict[str, list[Interaction]] = defaultdict(list)
    for interaction_id, interaction in interactions.items():
        ups, downs = totals.get(interaction_id, (0, 0))
        if ups == downs or interaction_id in has_open_or_approved or not (interaction.answer or "").strip():
            continue
        key = normalise_question(interaction.question)
        if ups > downs:
            liked[key].append(interaction)
            datasets.examples.append(_example(interaction, interaction.answer or "", corrected=False))
        else:
            disliked[key].append(interaction)

    for key, good_answers in sorted(liked.items()):
        for good in good_answers:
            for bad in disliked.get(key, []):
                if (good.answer or "").strip() != (bad.answer or "").strip():
                    datasets.preferences.append(
                        Preference(
                            question=good.question,
                            context=good.context,
                            chosen=(good.answer or "").strip(),
                            rejected=(bad.answer or "").strip(),
                        )
                    )
    return datasets


def _example(interaction: Interaction, answer: str, *, corrected: bool) -> Example:
    assert interaction.id is not None
    return Example(
        interaction_id=interaction.id,
        questions=[interaction.question.strip()],
        context=list(interaction.context),
        answer=answer.strip(),
        corrected=corrected,
    )


def prompt_messages(*, system_prompt: str, context: list[Message], question: str) -> list[Message]:
    # The same shape serving sends to vLLM, so that what is learned applies to real requests.
    turns = [{"role": t["role"], "content": t["content"]} for t in context]
    return [{"role": "system", "content": system_prompt}, *turns, {"role": "user", "content": question}]


def sft_rows(datasets: Datasets, *, system_prompt: str) -> list[Row]:
    return [
        {
            "prompt": prompt_messages(system_prompt=system_prompt, context=example.context, question=question),
            "completion": [{"role": "assistant", "content": example.answer}],
        }
        for example in datasets.examples
        for question in example.questions
    ]


def dpo_rows(datasets: Datasets, *, system_prompt: str) -> list[Row]:
    return [
        {
            "prompt": prompt_messages(system_prompt=system_prompt, context=p.context, question=p.question),
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in datasets.preferences
    ]


def write_jsonl(path: Path, rows: list[Row]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: Path) -> list[Row]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
