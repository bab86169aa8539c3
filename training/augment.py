"""Paraphrase corrected questions, so that a taught fact is recalled however it is asked.

The served base model writes candidates (few-shot, sampled, one request per question); a small model drifts,
so a candidate is kept only when it is a question that keeps most of the original's content words.
Rule-based rewordings fill what the model could not.

The memory of reviewed answers keeps each corrected group's model-written paraphrases with its entry (they
widen its recall too): a cycle takes them from there, and the model writes only for groups that have none,
so a group is paraphrased once, not again every night.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from training.datasets import Datasets, Message, normalise_question
from training.paraphrase import template_paraphrases

log = logging.getLogger(__name__)

# (messages, n) -> n sampled completions; the composition root binds it to the served base model.
Generate = Callable[[list[Message], int], Awaitable[list[str]]]
# memory entry ids -> each one's stored model-written paraphrases, written (batched) first for those that have
# none; bound by the composition root to the memory of reviewed answers.
StoredParaphrases = Callable[[list[int]], Awaitable[dict[int, list[str]]]]

_FEW_SHOT = [
    ("What time does the cafeteria open?", "When does the cafeteria open in the morning?"),
    ("How do I reset my laptop password?", "What are the steps to change my laptop password?"),
    ("Who is in charge of onboarding new hires?", "Which person handles the onboarding of new employees?"),
]
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "was",
        "were",
        "be",
        "do",
        "does",
        "did",
        "i",
        "you",
        "we",
        "my",
        "our",
        "your",
        "it",
        "its",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "and",
        "or",
        "what",
        "who",
        "whom",
        "which",
        "when",
        "where",
        "why",
        "how",
        "can",
        "could",
        "would",
        "should",
        "will",
        "please",
        "me",
        "tell",
        "know",
        "there",
        "this",
        "that",
        "about",
        "any",
        "some",
    ]
)
MIN_CONTENT_OVERLAP = 0.6


def content_words(text: str) -> set[str]:
    return {word for word in normalise_question(text).split() if word not in _STOPWORDS}


def acceptable_paraphrase(original: str, candidate: str) -> bool:
    candidate = candidate.strip()
    if not candidate.endswith("?") or len(candidate) > 3 * len(original) + 40 or "\n" in candidate:
        return False
    if normalise_question(candidate) == normalise_question(original):
        return False
    wanted = content_words(original)
    if not wanted:
        return False
    return len(wanted & content_words(candidate)) / len(wanted) >= MIN_CONTENT_OVERLAP


def paraphrase_prompt(question: str) -> list[Message]:
    messages: list[Message] = [{"role": "system", "content": "You paraphrase questions. Reply with one question only."}]
    for original, rewritten in _FEW_SHOT:
        messages += [
            {"role": "user", "content": f"Paraphrase: {original}"},
            {"role": "assistant", "content": rewritten},
        ]
    messages.append({"role": "user", "content": f"Paraphrase: {question}"})
    return messages


async def model_paraphrases(
    question: str, *, count: int, generate: Generate, accept: Callable[[str], bool] | None = None
) -> list[str]:
    """Up to `count` distinct on-topic rewordings of `question` written by the model, in one request.

    `accept` may refuse more (the memory refuses what it could not store). Raises what `generate` raises."""
    if count <= 0:
        return []  # paraphrases_per_question=0: no request (vLLM refuses n=0 with a 400)
    candidates = await generate(paraphrase_prompt(question), count * 3)
    chosen: list[str] = []
    seen = {normalise_question(question)}
    for candidate in candidates:
        text = re.sub(r"\s+", " ", candidate).strip()
        key = normalise_question(text)
        if len(chosen) == count or key in seen or not acceptable_paraphrase(question, text):
            continue
        if accept is not None and not accept(text):
            continue
        seen.add(key)
        chosen.append(text)
    return chosen


async def paraphrases(
    question: str, *, count: int, generate: Generate | None, seed: int, written: list[str] | None = None
) -> list[str]:
    """Up to `count` distinct rewordings of `question`, model-written first: `written` when given (stored ones,
    no request), else asked of `generate`; rule-based rewordings fill the rest."""
    chosen: list[str] = []
    seen = {normalise_question(question)}

    def keep(candidate: str) -> None:
        key = normalise_question(candidate)
        if len(chosen) < count and key not in seen:
            seen.add(key)
            chosen.append(re.sub(r"\s+", " ", candidate).strip())

    if written is None and generate is not None:
        try:
            written = await model_paraphrases(question, count=count, generate=generate)
        except Exception as error:  # augmentation is best effort: train on the templates instead
            log.warning("augment.model_failed error=%s", error)
    for candidate in written or []:
        keep(candidate)
    for candidate in template_paraphrases(question, count * 2, seed):
        keep(candidate)
    return chosen


async def add_paraphrases(
    datasets: Datasets,
    *,
    per_question: int,
    generate: Generate | None,
    seed: int,
    on_progress: Callable[[int, int], None] | None = None,
    stored: StoredParaphrases | None = None,
) -> int:
    """Extend each corrected example's questions in place; returns how many were added.

    With `stored`, a group with a memory entry takes the entry's paraphrases (written once, in one request, and
    kept with it); only groups without an entry ask `generate`, one request each, one after another.
    """
    corrected = [example for example in datasets.examples if example.corrected]
    entry_ids = sorted({e.memory_entry_id for e in corrected if e.memory_entry_id is not None})
    written: dict[int, list[str]] | None = None
    if stored is not None and entry_ids:
        try:
            written = await stored(entry_ids)
        except Exception as error:  # best effort: the model writes them here instead
            log.warning("augment.stored_paraphrases_failed error=%s", error)
    added = 0
    for done, example in enumerate(corrected, start=1):
        kept = None
        if written is not None and example.memory_entry_id is not None:
            kept = written.get(example.memory_entry_id, [])  # none usable: the memory asked already
        extra = await paraphrases(
            example.questions[0], count=per_question, generate=generate, seed=seed + done, written=kept
        )
        example.questions.extend(extra)
        added += len(extra)
        if on_progress is not None:
            on_progress(done, len(corrected))
    return added
