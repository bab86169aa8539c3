"""Relaying vLLM's server-sent events to the caller while keeping what the recording needs.

Events go out as they come, whole lines at a time, with vLLM's name for the model replaced by the one the
caller asked for; choice 0's text deltas are collected, and the end (`data: [DONE]`) or an error event noted.
"""

from __future__ import annotations

import json

DATA = b"data:"
DONE = b"[DONE]"


class AnswerStream:
    def __init__(self, *, model: str) -> None:
        self._model = model
        self._pending = b""
        self._parts: list[str] = []
        self.finished = False
        self.error: str | None = None

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def has_text(self) -> bool:
        return bool(self._parts)

    def feed(self, chunk: bytes) -> bytes:
        """The complete lines received so far, rewritten; a line cut by the chunk's end waits for the rest."""
        complete, newline, self._pending = (self._pending + chunk).rpartition(b"\n")
        if not newline:
            return b""
        return b"".join(self._line(line) + b"\n" for line in complete.split(b"\n"))

    def flush(self) -> bytes:
        """What is left once the upstream stream ended (normally nothing: events end with a blank line)."""
        rest, self._pending = self._pending, b""
        return self._line(rest) if rest else b""

    def _line(self, line: bytes) -> bytes:
        if not line.startswith(DATA):
            return line
        data = line[len(DATA) :].strip()
        if data == DONE:
            self.finished = True
            return line
        try:
            event = json.loads(data)
        except ValueError:
            return line
        if not isinstance(event, dict):
            return line
        if "error" in event:
            error = event["error"]
            self.error = str(error.get("message") if isinstance(error, dict) else error)[:500]
            return line
        for choice in event.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                delta = choice.get("delta")
                content = delta.get("content") if isinstance(delta, dict) else None
                if isinstance(content, str) and content:
                    self._parts.append(content)
        if "model" not in event:
            return line
        event["model"] = self._model
        return DATA + b" " + json.dumps(event, separators=(",", ":")).encode()
