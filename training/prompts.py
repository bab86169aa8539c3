"""The one prompt builder: what serving sends to vLLM, what training learns from and what the gate asks.

Earlier turns are kept newest first within a character budget, so that a long thread is cut the same way when
it is answered, when it is trained on and when it is evaluated: what is learned is what will be asked.
"""

from __future__ import annotations

Message = dict[str, str]

# Earlier turns kept with a question, counted in characters (newest first); older ones are left out.
MAX_CONTEXT_CHARS = 4000


def prompt_messages(*, system_prompt: str, context: list[Message], question: str) -> list[Message]:
    kept: list[Message] = []
    budget = MAX_CONTEXT_CHARS
    for turn in reversed(context):
        budget -= len(turn.get("content", ""))
        if budget < 0:
            break
        kept.insert(0, {"role": turn["role"], "content": turn["content"]})
    return [{"role": "system", "content": system_prompt}, *kept, {"role": "user", "content": question}]
