"""Feedback -> training data: SFT pairs and DPO preferences, built from the store.

Rules:
- Text is redacted (training/redact.py) before it enters an example: questions, thread context, answers
  and corrections; the replacements are counted by kind.
- Questions are grouped (training/curate.py): exact and near-duplicates are one group, worth one SFT
  example; the group's other wordings ride along as extra phrasings (capped).
- SFT: per group, the latest approved correction (by review time); a group without one trains its answer
  with the best net positive votes, if no approved or pending correction is open on that answer.
  Different approved corrections in one group are reported as conflicts.
- DPO: per group, (chosen = the winning correction, rejected = an original answer), or (chosen = the
  best up-voted answer, rejected = the worst down-voted one).
- One user's approved corrections and votes count up to a cap per cycle; what the cap removed is reported.
- Pending and rejected corrections never train.
- The memory of reviewed answers has the last word on a corrected group: a retired entry's group does not
  train, and an entry edited or superseded since the correction trains the entry's answer.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from store import feedback as feedback_repo
from store import interactions as interaction_repo
from store import memory as memory_repo
from store.models import Correction, CorrectionStatus, Feedback, Interaction, MemoryEntry, MemoryStatus
from training.curate import CurationPolicy, cap_per_user, group_key, group_questions
from training.prompts import prompt_messages
from training.redact import Redactor, default_redactor

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
    # When the feedback that made this example was given (review time or latest vote); None for anchors.
    feedback_at: datetime | None = None
    # A corrected group's entry in the memory of reviewed answers, which keeps its paraphrases.
    memory_entry_id: int | None = None

    def is_new(self, *, since: datetime | None) -> bool:
        """A taught example (not an anchor) whose feedback is newer than `since` (any, when None)."""
        if self.anchor or self.feedback_at is None:
            return False
        return since is None or as_utc(self.feedback_at) > as_utc(since)


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
    redacted: Counter[str] = field(default_factory=Counter)
    question_groups: int = 0
    duplicate_questions: int = 0  # questions folded into another one's group
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    capped: dict[str, dict[str, int]] = field(default_factory=dict)
    memory_retired: int = 0  # corrected groups left out: their memory entry was retired
    memory_newer: int = 0  # corrected groups taught the memory entry's newer answer (an edit, a later approval)

    def counts(self) -> dict[str, Any]:
        return {
            "sft_examples": len(self.examples),
            "sft_corrections": sum(1 for e in self.examples if e.corrected),
            "sft_upvoted": sum(1 for e in self.examples if not e.corrected and not e.anchor),
            "sft_anchors": sum(1 for e in self.examples if e.anchor),
            "sft_rows": sum(len(e.questions) for e in self.examples),
            "dpo_rows": len(self.preferences),
            "question_groups": self.question_groups,
            "duplicate_questions": self.duplicate_questions,
            "redacted": dict(sorted(self.redacted.items())),
            "conflicts": self.conflicts,
            "capped": self.capped,
            "memory_retired": self.memory_retired,
            "memory_newer": self.memory_newer,
        }

    def new_examples(self, *, since: datetime | None) -> int:
        """Taught examples (not anchors) whose feedback is newer than `since` (all of them when None)."""
        return sum(1 for e in self.examples if e.is_new(since=since))

    def keep_new(self, *, since: datetime) -> None:
        """Drop taught examples (and their preferences) from before `since`; anchors stay, against forgetting."""
        self.examples = [e for e in self.examples if e.anchor or e.is_new(since=since)]
        taught = {q for e in self.examples if not e.anchor for q in e.questions}
        self.preferences = [p for p in self.preferences if p.question in taught]

    def keep_new_with_replay(self, *, since: datetime, replay: int, seed: int) -> int:
        """`keep_new`, plus `replay` older taught examples drawn at random (corrected ones first); returns how
        many were replayed. Older preferences stay out: DPO runs on what is new, SFT keeps the old facts."""
        older = [e for e in self.examples if not e.anchor and not e.is_new(since=since)]
        rng = random.Random(seed)
        corrected = [e for e in older if e.corrected]
        upvoted = [e for e in older if not e.corrected]
        rng.shuffle(corrected)
        rng.shuffle(upvoted)
        replayed = (corrected + upvoted)[:replay]
        new_preferences = {q for e in self.examples if e.is_new(since=since) for q in e.questions}
        kept = {id(e) for e in replayed}
        self.examples = [e for e in self.examples if e.anchor or e.is_new(since=since) or id(e) in kept]
        self.preferences = [p for p in self.preferences if p.question in new_preferences]
        return len(replayed)


def as_utc(moment: datetime) -> datetime:
    # SQLite hands datetimes back naive; they were written in UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def normalise_question(text: str) -> str:
    return re.sub(r"[^\w]+", " ", text.lower()).strip()


class _Scrubber:
    """Redacts each distinct text once; replacements are counted only for text that enters the datasets."""

    def __init__(self, redactor: Redactor, counts: Counter[str]) -> None:
        self._redactor = redactor
        self._counts = counts
        self._cache: dict[str, tuple[str, Counter[str]]] = {}

    def peek(self, text: str) -> str:
        return self._redacted(text)[0]

    def take(self, text: str) -> str:
        clean, found = self._redacted(text)
        self._counts.update(found)
        return clean

    def take_context(self, context: list[dict[str, Any]]) -> list[Message]:
        return [{"role": str(t["role"]), "content": self.take(str(t["content"]))} for t in context]

    def _redacted(self, text: str) -> tuple[str, Counter[str]]:
        text = text.strip()
        if text not in self._cache:
            found: Counter[str] = Counter()
            self._cache[text] = (self._redactor.redact(text, found).strip(), found)
        return self._cache[text]


def build_datasets(
    *, session: Session, policy: CurationPolicy | None = None, redactor: Redactor | None = None
) -> Datasets:
    policy = policy or CurationPolicy()
    datasets = Datasets()
    scrub = _Scrubber(redactor or default_redactor(), datasets.redacted)
    interactions = {i.id: i for i in interaction_repo.list_answered(session=session) if i.id is not None}
    corrections = feedback_repo.list_corrections(session=session)
    remembered = memory_repo.entries_by_interaction(session=session)

    has_open_or_approved = {
        c.interaction_id for c in corrections if c.status in (CorrectionStatus.approved, CorrectionStatus.pending)
    }
    approved, capped_corrections = cap_per_user(
        [c for c in corrections if c.status == CorrectionStatus.approved and c.interaction_id in interactions],
        user=lambda c: c.author_id,
        recency=_correction_order,
        limit=policy.max_corrections_per_user,
    )
    votes, capped_votes = cap_per_user(
        [v for v in _all_votes(session) if v.interaction_id in interactions],
        user=lambda v: v.user_id,
        recency=lambda v: (as_utc(v.updated_at), v.id or 0),
        limit=policy.max_votes_per_user,
    )
    for user in sorted(set(capped_corrections) | set(capped_votes)):
        datasets.capped[user] = {"corrections": capped_corrections[user], "votes": capped_votes[user]}

    net: Counter[int] = Counter()
    voted_at: dict[int, datetime] = {}
    for vote in votes:
        net[vote.interaction_id] += vote.vote
        voted_at[vote.interaction_id] = max(as_utc(vote.updated_at), voted_at.get(vote.interaction_id, _EPOCH))
    approved_by_interaction: dict[int, list[Correction]] = defaultdict(list)
    for correction in approved:
        approved_by_interaction[correction.interaction_id].append(correction)

    # Only interactions that feedback can teach from take part; they are grouped by question.
    members = [
        interactions[i]
        for i in sorted(interactions)
        if i in approved_by_interaction or (net[i] != 0 and i not in has_open_or_approved)
    ]
    numbers = group_questions(
        [(_context_key(m, scrub), group_key(scrub.peek(m.question))) for m in members],
        threshold=policy.duplicate_threshold,
    )
    groups: dict[int, list[Interaction]] = defaultdict(list)
    for member, number in zip(members, numbers, strict=True):
        groups[number].append(member)
    datasets.question_groups = len(groups)
    datasets.duplicate_questions = len(members) - len(groups)

    for group in groups.values():
        group_corrections = [c for m in group for c in approved_by_interaction.get(m.id or 0, [])]
        entry = next((remembered[m.id] for m in group if m.id in remembered), None)
        if group_corrections and entry is not None and entry.status == MemoryStatus.retired:
            datasets.memory_retired += 1
        elif group_corrections:
            _teach_correction(datasets, scrub, group, group_corrections, policy, entry=entry)
        else:
            _teach_votes(datasets, scrub, group, net, voted_at, policy)
    return datasets


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _correction_order(correction: Correction) -> tuple[datetime, int]:
    return (as_utc(correction.reviewed_at or correction.created_at), correction.id or 0)


def _all_votes(session: Session) -> list[Feedback]:
    # Per-user votes are needed for the cap; store.feedback offers only totals per interaction.
    return list(session.exec(select(Feedback).order_by(col(Feedback.id))).all())


def _context_key(interaction: Interaction, scrub: _Scrubber) -> tuple[str, ...]:
    # The same words asked in different threads can mean different things: only same-context questions group.
    return tuple(group_key(scrub.peek(str(turn.get("content", "")))) for turn in interaction.context)


def _teach_correction(
    datasets: Datasets,
    scrub: _Scrubber,
    group: list[Interaction],
    corrections: list[Correction],
    policy: CurationPolicy,
    *,
    entry: MemoryEntry | None,
) -> None:
    winner = max(corrections, key=_correction_order)
    source = next(m for m in group if m.id == winner.interaction_id)
    taught, taught_at = winner.text, as_utc(winner.reviewed_at or winner.created_at)
    if entry is not None and entry.answer != winner.text and as_utc(entry.approved_at) > taught_at:
        # Edited or superseded in the memory since: what the bot serves now is what it learns.
        taught, taught_at = entry.answer, as_utc(entry.approved_at)
        datasets.memory_newer += 1
    answer = scrub.take(taught)
    example = Example(
        interaction_id=source.id,
        questions=_phrasings(source, group, scrub, policy),
        context=scrub.take_context(source.context),
        answer=answer,
        corrected=True,
        feedback_at=taught_at,
        memory_entry_id=entry.id if entry is not None else None,
    )
    datasets.examples.append(example)
    if len({group_key(scrub.peek(c.text)) for c in corrections}) > 1:
        datasets.conflicts.append(
            {"question": example.questions[0], "correction_ids": sorted(c.id for c in corrections if c.id is not None)}
        )
    # The corrected answer itself is the one to prefer against; else another wording's answer that differs.
    for candidate in [source, *(m for m in group if m is not source)]:
        original = scrub.peek(candidate.answer or "")
        if original and group_key(original) != group_key(answer):
            datasets.preferences.append(
                Preference(
                    question=example.questions[0],
                    context=example.context,
                    chosen=answer,
                    rejected=scrub.take(candidate.answer or ""),
                )
            )
            break


def _teach_votes(
    datasets: Datasets,
    scrub: _Scrubber,
    group: list[Interaction],
    net: Counter[int],
    voted_at: dict[int, datetime],
    policy: CurationPolicy,
) -> None:
    answered = [m for m in group if m.id is not None and scrub.peek(m.answer or "")]
    liked = [m for m in answered if net[m.id or 0] > 0]
    disliked = [m for m in answered if net[m.id or 0] < 0]
    if not liked:
        return
    best = max(liked, key=lambda m: (net[m.id or 0], m.id or 0))
    example = Example(
        interaction_id=best.id,
        questions=_phrasings(best, group, scrub, policy),
        context=scrub.take_context(best.context),
        answer=scrub.take(best.answer or ""),
        corrected=False,
        feedback_at=max(voted_at[m.id or 0] for m in liked),
    )
    datasets.examples.append(example)
    if disliked:
        worst = min(disliked, key=lambda m: (net[m.id or 0], -(m.id or 0)))
        if group_key(scrub.peek(worst.answer or "")) != group_key(example.answer):
            datasets.preferences.append(
                Preference(
                    question=example.questions[0],
                    context=example.context,
                    chosen=example.answer,
                    rejected=scrub.take(worst.answer or ""),
                )
            )


def _phrasings(first: Interaction, group: list[Interaction], scrub: _Scrubber, policy: CurationPolicy) -> list[str]:
    """The example's own question, then the group's other distinct wordings, up to the cap."""
    chosen: list[str] = []
    seen: set[str] = set()
    for member in [first, *(m for m in group if m is not first)]:
        text = scrub.peek(member.question)
        key = group_key(text)
        if key in seen or not text:
            continue
        if len(chosen) > policy.max_extra_phrasings:
            break
        seen.add(key)
        chosen.append(scrub.take(member.question))
    return chosen


def redact_datasets(datasets: Datasets, *, redactor: Redactor | None = None) -> None:
    """A last pass over every text (paraphrases and anchors included), in place; new finds are counted."""
    redactor = redactor or default_redactor()
    found = datasets.redacted

    def clean_context(context: list[Message]) -> list[Message]:
        return [{**turn, "content": redactor.redact(turn["content"], found)} for turn in context]

    for example in datasets.examples:
        questions: list[str] = []
        for question in (redactor.redact(q, found) for q in example.questions):
            if group_key(question) not in {group_key(q) for q in questions}:
                questions.append(question)
        example.questions = questions
        example.context = clean_context(example.context)
        example.answer = redactor.redact(example.answer, found)
    for preference in datasets.preferences:
        preference.question = redactor.redact(preference.question, found)
        preference.context = clean_context(preference.context)
        preference.chosen = redactor.redact(preference.chosen, found)
        preference.rejected = redactor.redact(preference.rejected, found)


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


def dataset_sha256(paths: list[Path]) -> dict[str, str]:
    """file name -> sha256 of its bytes: what a run trained on, to compare and to verify later."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


def read_jsonl(path: Path) -> list[Row]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
