"""Anchor rows: general questions paired with the base model's own answers.

A tiny model tuned on a handful of facts starts answering everything with them ("The capital of
France is Kastanienallee 12."). Training on what it already says to unrelated questions keeps that
behaviour in place while the facts are learned.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from training.datasets import Datasets, Example

ANCHOR_QUESTIONS = (
    "What is the capital of France?",
    "How many days are in a week?",
    "What color is the sky on a clear day?",
    "What is 2 + 3?",
    "Can you help me write a short thank-you note?",
    "What does a web browser do?",
    "How do I boil an egg?",
    "Who wrote Romeo and Juliet?",
)

# question -> the base model's answer (temperature 0); bound to the served base model by the cycle.
BaseAnswer = Callable[[str], Awaitable[str]]


async def add_anchors(datasets: Datasets, *, answer: BaseAnswer, questions: tuple[str, ...] = ANCHOR_QUESTIONS) -> int:
    """Append one anchor example per question; returns how many were added."""
    added = 0
    for question in questions:
        text = (await answer(question)).strip()
        if text:
            datasets.examples.append(
                Example(
                    interaction_id=None, questions=[question], context=[], answer=text, corrected=False, anchor=True
                )
            )
            added += 1
    return added
