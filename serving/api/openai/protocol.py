"""OpenAI's chat completion request as we accept it, the model list, and the errors of this surface.

Fields we do not name pass through to vLLM as sent; the ones that cost (messages, `n`, the token budget) are
bounded twice: by the schema, against absurd bodies, and by `limit_problems`, against the configured limits.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.answers import AnswerSettings, with_reviewed
from serving.client import Message
from serving.errors import EngineRejected, NotFound, TuneloopError
from serving.memory import MemoryHit

ALIAS = "tuneloop"  # the active adapter, whichever version it is
MAX_MESSAGES = 1000
MAX_MESSAGE_CHARS = 100_000
MAX_SYSTEM_MESSAGES = 4
MAX_TEXT_PARTS = 100


class ModelNotFound(NotFound):
    code = "model_not_found"


class UpstreamRefused(EngineRejected):
    """vLLM refused the request itself (e.g. a prompt longer than the model's window): the caller's to change."""

    status_code = 400


class StreamClosed(TuneloopError):
    """The caller closed a stream before the answer was complete (recorded as the cause; never sent)."""

    status_code = 499
    code = "client_closed"


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str = Field(max_length=MAX_MESSAGE_CHARS)


MessageText = Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]
TextParts = Annotated[list[TextPart], Field(max_length=MAX_TEXT_PARTS)]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: MessageText | TextParts
    name: str | None = Field(default=None, max_length=64)

    @property
    def text(self) -> str:
        """The content as one string; text parts are joined with newlines, as vLLM joins them."""
        return self.content if isinstance(self.content, str) else "\n".join(part.text for part in self.content)

    def upstream(self) -> dict[str, str]:
        message = {"role": self.role, "content": self.text}
        return message if self.name is None else {**message, "name": self.name}


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(default=ALIAS, max_length=128, description="`tuneloop` (the active adapter) or the base model.")
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    n: int = Field(default=1, ge=1, description="At most serving.max_completion_choices.")
    max_tokens: int | None = Field(default=None, ge=1, description="At most serving.max_answer_tokens, the default.")
    max_completion_tokens: int | None = Field(default=None, ge=1, description="As max_tokens; wins over it.")
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    stream: bool = False
    user: str | None = Field(default=None, max_length=256, description="Ignored: the bearer token is the identity.")

    @property
    def question_index(self) -> int | None:
        """The last user message is the question."""
        users = [index for index, message in enumerate(self.messages) if message.role == "user"]
        return users[-1] if users else None

    @property
    def question(self) -> str:
        index = self.question_index
        return "" if index is None else self.messages[index].text

    @property
    def context(self) -> list[Message]:
        """The conversation before the question, without system messages (as /api/ask records it)."""
        index = self.question_index or 0
        return [{"role": m.role, "content": m.text} for m in self.messages[:index] if m.role != "system"]

    def answer_tokens(self, settings: AnswerSettings) -> int:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens if self.max_tokens is not None else settings.max_answer_tokens

    def limit_problems(self, settings: AnswerSettings) -> list[dict[str, Any]]:
        """What breaks the configured limits, as validation errors. The question's own length is the answer
        service's to check: an oversized question is refused and recorded, like one asked through /api/ask."""
        problems: list[dict[str, Any]] = []

        def problem(field: str, message: str, value: object) -> None:
            problems.append({"type": "value_error", "loc": ("body", field), "msg": message, "input": value})

        index = self.question_index
        if index is None:
            problem("messages", "there is no user message; the last one is the question", None)
        turns = sum(1 for i, m in enumerate(self.messages) if m.role != "system" and i != index)
        if turns > settings.max_context_turns:
            problem("messages", f"{turns} turns besides the question; the limit is {settings.max_context_turns}", None)
        systems = sum(1 for m in self.messages if m.role == "system")
        if systems > MAX_SYSTEM_MESSAGES:
            problem("messages", f"{systems} system messages; the limit is {MAX_SYSTEM_MESSAGES}", None)
        for i, message in enumerate(self.messages):
            if i != index and len(message.text) > settings.max_question_chars:
                limit = settings.max_question_chars
                problem(f"messages.{i}", f"{len(message.text):,} characters; the limit is {limit:,}", None)
        if self.n > settings.max_completion_choices:
            problem("n", f"at most {settings.max_completion_choices} choices", self.n)
        for field, value in (("max_tokens", self.max_tokens), ("max_completion_tokens", self.max_completion_tokens)):
            if value is not None and value > settings.max_answer_tokens:
                problem(field, f"at most {settings.max_answer_tokens} tokens", value)
        return problems

    def upstream(
        self, *, model: str, settings: AnswerSettings, reviewed: list[MemoryHit] | None = None
    ) -> dict[str, Any]:
        """The body for vLLM: what the caller set, under vLLM's name for the model, with one token budget, and
        the memory's reviewed answers as serving puts them into its own prompts."""
        payload = self.model_dump(
            exclude_unset=True, exclude={"model", "messages", "max_tokens", "max_completion_tokens", "user"}
        )
        return {
            **payload,
            "model": model,
            "messages": with_reviewed([message.upstream() for message in self.messages], reviewed or []),
            "max_tokens": self.answer_tokens(settings),
        }


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tuneloop"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
