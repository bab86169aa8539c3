"""Paraphrase corrected questions, so that a taught fact is recalled however it is asked.

The served base model writes candidates (few-shot, sampled); a small model drifts, so a candidate is kept
only when it is a question that keeps most of the original's content words. Rule-based rewordings
fill what the model could not.
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


async def paraphrases(question: str, *, count: int, generate: Generate | None, seed: int) -> list[str]:
    """Up to `count` distinct rewordings of `question`, model-written first."""
    chosen: list[str] = []
    seen = {normalise_question(question)}

    def keep(candidate: str) -> None:
        key = normalise_question(candidate)
        if len(chosen) < count and key not in seen:
            seen.add(key)
            chosen.append(re.sub(r"\s+", " ", candidate).strip())

    if generate is not None:
        try:
            candidates = await generate(paraphrase_prompt(question), count * 3)
        except Exception as error:  # augmentation is best effort: train on the templates instead
            log.warning("augment.model_failed error=%s", error)
            candidates = []
        for candidate in candidates:
            if acceptable_paraphrase(question, candidate):
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
) -> int:
    """Extend each corrected example's questions in place; returns how many were added."""
    corrected = [example for example in datasets.examples if example.corrected]
    added = 0
    for done, example in enumerate(corrected, start=1):
        extra = await paraphrases(example.questions[0], count=per_question, generate=generate, seed=seed + done)
        example.questions.extend(extra)
        added += len(extra)
        if on_progress is not None:
            on_progress(done, len(corrected))
    return added
