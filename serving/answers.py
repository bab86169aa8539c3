"""The answer service: record the question, ask vLLM under the active adapter, record the answer.

The question is written before the model is asked, so that a dead model server or an unusable input
loses nothing: the interaction is kept with status "failed" and the cause. Store writes run in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import Engine

from serving.client import InferenceClient, Message
from serving.errors import EngineRejected, InvalidQuestion, TuneloopError
from serving.memory import NOTHING, MemoryHit, Recall, ReviewedMemory
from serving.metrics import ServiceMetrics
from serving.registry import AdapterRegistry
from store import interactions as interaction_repo
from store.db import session_scope
from store.models import MemoryMode

log = logging.getLogger(__name__)

# Keep the prompt inside the model's window: the newest turns of a thread matter most.
MAX_CONTEXT_CHARS = 4000
MAX_CONTEXT_TURNS_STORED = 50


@dataclass(kw_only=True)
class AnswerSettings:
    system_prompt: str
    max_question_chars: int
    max_answer_tokens: int
    temperature: float
    # Bounds of the OpenAI-compatible surface (serving.max_context_turns, serving.max_completion_choices).
    max_context_turns: int = 50
    max_completion_choices: int = 4


@dataclass(frozen=True, kw_only=True)
class Answer:
    interaction_id: int
    text: str
    adapter_version: str
    latency_ms: int
    # The reviewed answer this answer used, and how (in the prompt, or given as is).
    memory: MemoryHit | None = None
    memory_mode: MemoryMode | None = None


@dataclass(frozen=True, kw_only=True)
class Question:
    text: str
    user_id: str
    source: str
    context: list[Message] | None = None
    channel: str | None = None
    thread_ts: str | None = None
    message_ts: str | None = None


def with_reviewed(messages: list[Message], hits: list[MemoryHit]) -> list[Message]:
    """`messages` with the memory's reviewed answers: the best one as a note in the system prompt, and each as an
    earlier exchange (the best nearest the question), after the leading system messages.

    Both, because a 135M model copies a reviewed fact most reliably so: bench/memory.py's prompt comparison
    (as an exchange only, in the system prompt only, in the user's message, both) is in the README."""
    if not hits:
        return messages
    lead = next((i for i, message in enumerate(messages) if message["role"] != "system"), len(messages))
    note = f"Reviewed answer: {hits[0].answer}"
    if lead:
        system = messages[lead - 1]
        head = [*messages[: lead - 1], {**system, "content": f"{system['content']}\n\n{note}"}]
    else:
        head = [{"role": "system", "content": note}]
    exchanges: list[Message] = []
    for hit in reversed(hits):
        exchanges += [{"role": "user", "content": hit.wording}, {"role": "assistant", "content": hit.answer}]
    return [*head, *exchanges, *messages[lead:]]


def build_messages(
    *, system_prompt: str, context: list[Message], question: str, reviewed: list[MemoryHit] | None = None
) -> list[Message]:
    kept: list[Message] = []
    budget = MAX_CONTEXT_CHARS
    for turn in reversed(context):
        budget -= len(turn.get("content", ""))
        if budget < 0:
            break
        kept.insert(0, {"role": turn["role"], "content": turn["content"]})
    messages = [{"role": "system", "content": system_prompt}, *kept, {"role": "user", "content": question}]
    return with_reviewed(messages, reviewed or [])


class AnswerService:
    def __init__(
        self,
        *,
        engine: Engine,
        client: InferenceClient,
        registry: AdapterRegistry,
        settings: AnswerSettings,
        memory: ReviewedMemory | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self._engine = engine
        self._client = client
        self._registry = registry
        self._settings = settings
        self._memory = memory
        # None: counted in a registry of its own that nobody scrapes (tests, scripts).
        self._metrics = metrics if metrics is not None else ServiceMetrics()

    async def recall(self, text: str) -> Recall:
        """The memory's reviewed answers for a question. The memory failing never fails an answer."""
        if self._memory is None:
            return NOTHING
        try:
            return await asyncio.to_thread(self._memory.recall, text)
        except Exception as error:
            log.warning("answer.memory_unavailable error=%s", type(error).__name__, exc_info=error)
            return NOTHING

    @property
    def settings(self) -> AnswerSettings:
        return self._settings

    def record_question(self, question: Question) -> int:
        with session_scope(self._engine) as session:
            interaction = interaction_repo.create_interaction(
                session=session,
                user_id=question.user_id,
                source=question.source,
                # Bounded before it is stored: an oversized question is refused, and kept only up to the limit.
                question=question.text[: self._settings.max_question_chars],
                context=[
                    {"role": turn["role"], "content": turn["content"][: self._settings.max_question_chars]}
                    for turn in (question.context or [])[-MAX_CONTEXT_TURNS_STORED:]
                ],
                channel=question.channel,
                thread_ts=question.thread_ts,
                message_ts=question.message_ts,
            )
        assert interaction.id is not None
        return interaction.id

    def validate(self, text: str) -> None:
        if not text.strip():
            raise InvalidQuestion("the question is empty", hint="Write a question after the mention.")
        if len(text) > self._settings.max_question_chars:
            raise InvalidQuestion(
                f"the question is {len(text):,} characters; the limit is {self._settings.max_question_chars:,}",
                hint="Shorten it, or ask about one part at a time.",
            )

    async def ask(self, question: Question) -> Answer:
        chunks = [chunk async for chunk in self.ask_stream(question)]
        final = chunks[-1]
        assert isinstance(final, Answer)
        return final

    async def ask_stream(self, question: Question) -> AsyncIterator[str | Answer]:
        """Yield text deltas, then one final Answer. Raises TuneloopError after recording the failure."""
        interaction_id = await asyncio.to_thread(self.record_question, question)
        started = time.perf_counter()
        log.info("answer.start interaction=%s source=%s chars=%d", interaction_id, question.source, len(question.text))
        try:
            self.validate(question.text)
            recall = await self.recall(question.text)
            if recall.mode is MemoryMode.direct and recall.best is not None:
                answer = await self._give_reviewed(interaction_id, recall.best, started=started)
                yield answer.text
                yield answer
                return
            messages = build_messages(
                system_prompt=self._settings.system_prompt,
                context=question.context or [],
                question=question.text.strip(),
                reviewed=recall.hits,
            )
            parts: list[str] = []
            first_text: float | None = None
            for attempt in (1, 2):
                try:
                    async with self._registry.use() as adapter:
                        async for delta in (adapter.endpoint or self._client).chat_stream(
                            model=adapter.model,
                            messages=messages,
                            max_tokens=self._settings.max_answer_tokens,
                            temperature=self._settings.temperature,
                        ):
                            if first_text is None:
                                first_text = time.perf_counter()
                            parts.append(delta)
                            yield delta
                    break
                except EngineRejected as error:
                    # vLLM restarted and forgot its runtime adapters: load them again and retry once,
                    # unless text already went out (a retry would repeat it).
                    if attempt == 2 or parts or "does not exist" not in error.message:
                        raise
                    log.warning("answer.adapter_missing model=%s: restoring adapters", adapter.model)
                    await self._registry.restore()
            text = "".join(parts).strip()
        except TuneloopError as error:
            await asyncio.to_thread(self.record_failure, interaction_id, started=started, error=error)
            error.interaction_id = interaction_id
            raise
        used = recall.best
        latency_ms = await asyncio.to_thread(
            self.record_answer,
            interaction_id,
            text=text,
            adapter_version=adapter.version,
            started=started,
            first_text=first_text,
            memory=used,
            memory_mode=recall.mode,
        )
        yield Answer(
            interaction_id=interaction_id,
            text=text,
            adapter_version=adapter.version,
            latency_ms=latency_ms,
            memory=used,
            memory_mode=recall.mode,
        )

    async def _give_reviewed(self, interaction_id: int, hit: MemoryHit, *, started: float) -> Answer:
        # No model call: the adapter recorded is the one that would have answered.
        version = self._registry.active.version
        latency_ms = await asyncio.to_thread(
            self.record_answer,
            interaction_id,
            text=hit.answer,
            adapter_version=version,
            started=started,
            first_text=time.perf_counter(),  # the whole answer is its first text
            memory=hit,
            memory_mode=MemoryMode.direct,
        )
        return Answer(
            interaction_id=interaction_id,
            text=hit.answer,
            adapter_version=version,
            latency_ms=latency_ms,
            memory=hit,
            memory_mode=MemoryMode.direct,
        )

    def record_answer(
        self,
        interaction_id: int,
        *,
        text: str,
        adapter_version: str,
        started: float,
        first_text: float | None = None,
        memory: MemoryHit | None = None,
        memory_mode: MemoryMode | None = None,
    ) -> int:
        """Store the answer to a recorded question, timed from `started` (perf_counter); returns the latency.

        `first_text` (perf_counter) is when a streamed answer's first text came; None when it was not streamed."""
        seconds = time.perf_counter() - started
        latency_ms = int(seconds * 1000)
        with session_scope(self._engine) as session:
            interaction_repo.record_answer(
                session=session,
                interaction_id=interaction_id,
                answer=text,
                adapter_version=adapter_version,
                latency_ms=latency_ms,
                memory_entry_id=memory.entry_id if memory else None,
                memory_mode=memory_mode.value if memory_mode else None,
            )
        log.info(
            "answer.done interaction=%s adapter=%s memory=%s latency_ms=%d",
            interaction_id,
            adapter_version,
            memory_mode.value if memory_mode else "none",
            latency_ms,
        )
        self._metrics.answered(
            version=adapter_version,
            memory=memory_mode,
            seconds=seconds,
            first_text_s=first_text - started if first_text is not None else None,
            characters=len(text),
        )
        return latency_ms

    def record_failure(self, interaction_id: int, *, started: float, error: TuneloopError) -> None:
        """Mark a recorded question failed, with the error's code and message as the cause."""
        latency_ms = int((time.perf_counter() - started) * 1000)
        with session_scope(self._engine) as session:
            interaction_repo.record_failure(
                session=session,
                interaction_id=interaction_id,
                error=f"{error.code}: {error.message}",
                latency_ms=latency_ms,
            )
        log.warning("answer.failed interaction=%s code=%s error=%s", interaction_id, error.code, error.message)
        self._metrics.answer_failed(code=error.code)
