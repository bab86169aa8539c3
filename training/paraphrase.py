"""Rule-based question rewordings, used to widen a correction into several SFT rows.

Deterministic for a given (question, n, seed); never returns the input itself or duplicates.
"""

from __future__ import annotations

import random
import re

# Leading phrases that only wrap the actual question; stripped to find its core.
_WRAPPERS = (
    r"quick question[:,]?\s*",
    r"hey[,!]?\s*",
    r"hi[,!]?\s*",
    r"please[,]?\s*",
    r"(?:do|does) (?:you|anyone|somebody) know\s*",
    r"(?:can|could|would) you (?:please )?(?:tell|let) me (?:know )?\s*",
    r"(?:can|could|would) you (?:please )?(?:remind me|explain)\s*",
    r"i(?:'d| would) like to know\s*",
    r"i(?:'m| am) wondering\s*",
    r"i wonder\s*",
    r"tell me\s*",
    r"remind me\s*",
    r"any idea\s*",
)
_WRAPPER_RE = re.compile(r"^(?:" + "|".join(_WRAPPERS) + r")", re.IGNORECASE)

# Wrappers that take an embedded question ("Do you know where the office is?").
_EMBEDDING_PREFIXES = (
    "Do you know {q}?",
    "Can you tell me {q}?",
    "Could you tell me {q}?",
    "I'd like to know {q}.",
    "Tell me {q}.",
    "Any idea {q}?",
    "Quick question: do you know {q}?",
    "Please remind me {q}.",
    "I was wondering {q}.",
)
# Wrappers that keep the direct question ("Quick question: Where is the office?").
_DIRECT_PREFIXES = (
    "Quick question: {q}?",
    "Hey, {q}?",
    "Hi! {q}?",
    "Sorry to bother you, {q}?",
    "{q}? Thanks!",
    "{q}? Just checking.",
)

_AUX = ("is", "are", "was", "were", "does", "do", "did", "can", "should", "will", "would", "has", "have")
_WH = ("what", "who", "whom", "which", "where", "when", "why", "how")


def _core(question: str) -> str:
    """The direct question without greeting/wrapper phrases and trailing punctuation."""
    text = question.strip()
    while True:
        stripped = _WRAPPER_RE.sub("", text, count=1).strip()
        if stripped == text or not stripped:
            break
        text = stripped
    text = text.rstrip(" ?.!").strip()
    words = text.split()
    # An embedded question left by a stripped wrapper ("where the office is") back to direct order.
    if (
        len(words) >= 3
        and words[0].lower() in _WH
        and words[-1].lower() in ("is", "are")
        and words[1].lower() not in _AUX
    ):
        return " ".join([words[0], words[-1], *words[1:-1]])
    return text


def _lower_first(text: str) -> str:
    # Keep acronyms and proper nouns such as "I" or "VPN" intact.
    word = text.split(" ", 1)[0]
    if len(word) > 1 and word[:2].isupper():
        return text
    return text[:1].lower() + text[1:] if text else text


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _embedded(core: str) -> str | None:
    """Indirect-question form: "where is the office" -> "where the office is"."""
    words = core.split()
    if len(words) < 3 or words[0].lower() not in _WH:
        return None
    wh, aux = words[0].lower(), words[1].lower()
    if aux in ("is", "are", "was", "were"):
        # "what is the password" -> "what the password is"
        return " ".join([wh, *words[2:], words[1]])
    if len(words) > 3 and words[2].lower() in ("is", "are"):
        # "what day is payroll" -> "what day payroll is"
        return " ".join([wh, words[1], *words[3:], words[2]])
    if aux in _AUX:
        # "what day does payroll run" stays close enough with the auxiliary dropped awkwardly,
        # so keep the direct word order instead.
        return None
    return _lower_first(core)  # "who approves travel expenses"


def template_paraphrases(question: str, n: int, seed: int) -> list[str]:
    """Up to `n` distinct rule-based rewordings of `question`, excluding the question itself."""
    if n <= 0:
        return []
    core = _core(question)
    if not core:
        return []
    direct = _upper_first(core)
    direct_lower = _lower_first(core)
    embedded = _embedded(core)

    templated = [template.format(q=direct_lower) for template in _DIRECT_PREFIXES]
    if embedded is not None:
        templated += [template.format(q=embedded) for template in _EMBEDDING_PREFIXES]
    else:
        templated += [f"Do you know: {direct_lower}?", f"Can you tell me: {direct_lower}?"]
    # Case/punctuation-only variants stay as they are; templated ones start upper-case.
    candidates = [f"{direct}?", f"{direct_lower}?", direct, direct_lower]
    candidates += [_upper_first(c) for c in templated]

    def norm(text: str) -> str:
        return " ".join(text.split())

    seen = {norm(question)}
    unique: list[str] = []
    for candidate in candidates:
        key = norm(candidate)
        if key in seen:
            continue
        seen.add(key)
        unique.append(key)

    # Prefer rewordings that change the wording, then the mere punctuation/case variants.
    lexical = [c for c in unique if c.lower().rstrip("?.!") != core.lower()]
    trivial = [c for c in unique if c not in lexical]
    rng = random.Random(f"{seed}:{question}")
    rng.shuffle(lexical)
    rng.shuffle(trivial)
    return (lexical + trivial)[:n]
