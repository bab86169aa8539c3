"""Curation rules that keep a few loud inputs from outweighing many quiet ones.

- Questions that are the same, or nearly (wording, typos, punctuation), fall into one group; a group is
  worth one training example however often it was asked.
- One user's corrections and votes count up to a cap per cycle; the rest are reported, not trained on.

Near-duplicates are judged on the content words the two questions do not share: "Where is the Berlin
office?" and "Where is the Paris office?" differ in one word that matters, while "What's the guest wifi
password" and "What is the guest Wi-Fi password?" differ in spelling only. A whole-string score such as
rapidfuzz's token_set_ratio rates the first pair above 90 (and any question that is a subset of another at
100), so it is used only to find candidates quickly.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from rapidfuzz import fuzz, process

T = TypeVar("T")

# Function words (and the pieces contractions leave behind) carry no meaning for "is this the same question".
_STOPWORD_LIST = """
    a an the is are was were be been am do does did i you we they he she my our your their it its of to in on at
    for with and or what who whom which when where why how can could would should will shall may might must please
    me us tell know there this that these those about any some s t d ll re ve m whats whos wheres hows
    hi hello hey thanks thank"""
_STOPWORDS = frozenset(_STOPWORD_LIST.split())
_PREFILTER_CUTOFF = 60.0


@dataclass(frozen=True, kw_only=True)
class CurationPolicy:
    duplicate_threshold: float = 90.0
    max_extra_phrasings: int = 4
    max_corrections_per_user: int = 20
    max_votes_per_user: int = 50


def group_key(text: str) -> str:
    """A question's identity for exact duplicates: case, accents' composition and punctuation do not count."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[^\w]+", " ", folded).strip()


def _content(key: str) -> list[str]:
    return [word for word in key.split() if word not in _STOPWORDS]


def question_similarity(a: str, b: str) -> float:
    """0-100: how alike two `group_key`s are, judged by the content words only one of them has."""
    if a == b:
        return 100.0
    if re.findall(r"\d+", a) != re.findall(r"\d+", b):
        return 0.0  # "room 12" and "room 13" are different questions however alike they look
    words_a, words_b = _content(a), _content(b)
    only_a = [w for w in words_a if w not in set(words_b)]
    only_b = [w for w in words_b if w not in set(words_a)]
    if not only_a and not only_b:
        return 100.0 if words_a or words_b else float(fuzz.ratio(a, b))
    # Joined, so that "wi fi" and "wifi" or "e mail" and "email" compare as the same word.
    return float(fuzz.ratio("".join(only_a), "".join(only_b)))


def group_questions(items: Sequence[tuple[Hashable, str]], *, threshold: float) -> list[int]:
    """A group number for each (bucket, group_key); only items in the same bucket are ever grouped."""
    groups: list[int] = []
    seen: dict[tuple[Hashable, str], int] = {}
    # Per bucket: the keys grouped so far (for the candidate search) and their group numbers.
    known: dict[Hashable, tuple[list[str], list[int]]] = {}
    next_group = 0
    for bucket, key in items:
        if (bucket, key) in seen:
            groups.append(seen[(bucket, key)])
            continue
        keys, numbers = known.setdefault(bucket, ([], []))
        found: int | None = None
        candidates = process.extract(
            key, keys, scorer=fuzz.token_sort_ratio, score_cutoff=_PREFILTER_CUTOFF, limit=None
        )
        for _match, _score, index in sorted(candidates, key=lambda c: (-c[1], c[2])):
            if question_similarity(key, keys[index]) >= threshold:
                found = numbers[index]
                break
        if found is None:
            found, next_group = next_group, next_group + 1
        keys.append(key)
        numbers.append(found)
        seen[(bucket, key)] = found
        groups.append(found)
    return groups


def cap_per_user(
    items: Sequence[T], *, user: Callable[[T], str], recency: Callable[[T], Any], limit: int
) -> tuple[list[T], Counter[str]]:
    """Each user's newest `limit` items are kept (in the input order); how many were dropped, per user."""
    by_user: dict[str, list[T]] = {}
    for item in items:
        by_user.setdefault(user(item), []).append(item)
    dropped_ids: set[int] = set()
    dropped: Counter[str] = Counter()
    for name, own in by_user.items():
        for item in sorted(own, key=recency, reverse=True)[max(limit, 0) :]:
            dropped_ids.add(id(item))
            dropped[name] += 1
    return [item for item in items if id(item) not in dropped_ids], dropped
