"""POST /v1/chat/completions and GET /v1/models: the OpenAI API over the served adapters, for the official clients.

The API token is the credential (`OpenAI(base_url=URL + "/v1", api_key=TOKEN)`) and its user the identity;
the body's `user` is ignored. Two model names are served: `tuneloop`, the active adapter, and the base model.
Each completion is recorded as an interaction with source `openai`, as /api/ask records a question: the last
user message is the question, choice 0 the answer; a streamed answer is recorded once its last event went out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from serving.answers import AnswerService, Question
from serving.api.auth import CurrentUser
from serving.api.common import ERROR_RESPONSES
from serving.api.deps import Services, ServicesDep
from serving.api.errors import error_body
from serving.api.openai.protocol import (
    ALIAS,
    ChatCompletionRequest,
    ModelCard,
    ModelList,
    ModelNotFound,
    StreamClosed,
    UpstreamRefused,
)
from serving.api.openai.stream import AnswerStream
from serving.errors import EngineRejected, EngineUnavailable, TuneloopError
from serving.memory import NOTHING, MemoryHit, Recall
from serving.registry import AdapterRegistry, ServedAdapter
from store.models import BASE_VERSION, MemoryMode

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)
SOURCE = "openai"
INTERACTION_HEADER = "X-Tuneloop-Interaction-Id"
COMPLETIONS = "/v1/chat/completions"


@router.get("/models")
async def list_models(_user: CurrentUser, services: ServicesDep) -> ModelList:
    created = int(time.time())
    names = (ALIAS, services.registry.served_name(BASE_VERSION))
    return ModelList(data=[ModelCard(id=name, created=created) for name in names])


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, principal: CurrentUser, services: ServicesDep) -> Response:
    version = served_version(services.registry, body.model)
    problems = body.limit_problems(services.answers.settings)
    if problems:
        raise RequestValidationError(problems)
    question = Question(text=body.question, user_id=principal.user_id, source=SOURCE, context=body.context)
    recording = await Recording.start(services.answers, question)
    log.info(
        "openai.start interaction=%s model=%s stream=%s n=%d", recording.interaction_id, body.model, body.stream, body.n
    )
    try:
        services.answers.validate(body.question)  # empty or oversized: refused, and recorded as refused
    except TuneloopError as error:
        await recording.failed(error)
        raise
    # Reviewed answers go into the prompt of `tuneloop` only: the base model is asked as it is. They are never
    # given as is here: an OpenAI client asked for the model's completion, with its own sampling parameters.
    if version is None:
        recall = await services.answers.recall(body.question)
        recording.recall = Recall(hits=recall.hits, mode=MemoryMode.prompt) if recall.hits else NOTHING
    if body.stream:
        return await _stream(services, body, recording, version=version)
    return await _complete(services, body, recording, version=version)


def served_version(registry: AdapterRegistry, model: str) -> str | None:
    """The version a model name serves (None: the active one, whichever it is); ModelNotFound for other names."""
    if model == ALIAS:
        return None
    base = registry.served_name(BASE_VERSION)
    if model == base:
        return BASE_VERSION
    raise ModelNotFound(
        f"the model `{model}` does not exist",
        hint=f"Use `{ALIAS}` (the active adapter) or `{base}` (the base model); GET /v1/models lists them.",
    )


@dataclass(kw_only=True)
class Recording:
    """One completion's interaction: the question is stored before vLLM is asked, the outcome after."""

    answers: AnswerService
    interaction_id: int
    started: float
    recall: Recall = NOTHING
    # When a streamed answer's first text went out (perf_counter), for the time-to-first-text histogram.
    first_text: float | None = None

    @property
    def reviewed(self) -> list[MemoryHit]:
        return self.recall.hits

    @classmethod
    async def start(cls, answers: AnswerService, question: Question) -> Recording:
        interaction_id = await asyncio.to_thread(answers.record_question, question)
        return cls(answers=answers, interaction_id=interaction_id, started=time.perf_counter())

    @property
    def headers(self) -> dict[str, str]:
        return {INTERACTION_HEADER: str(self.interaction_id)}

    async def answered(self, text: str, adapter: ServedAdapter) -> None:
        await asyncio.to_thread(
            self.answers.record_answer,
            self.interaction_id,
            text=text.strip(),
            adapter_version=adapter.version,
            started=self.started,
            first_text=self.first_text,
            memory=self.recall.best,
            memory_mode=self.recall.mode,
        )

    async def failed(self, error: TuneloopError) -> None:
        """Record the failure, and let the error envelope cite the interaction."""
        await asyncio.to_thread(self.answers.record_failure, self.interaction_id, started=self.started, error=error)
        error.interaction_id = self.interaction_id


async def _complete(
    services: Services, body: ChatCompletionRequest, recording: Recording, *, version: str | None
) -> Response:
    async with services.registry.use(version) as adapter:
        try:
            payload = body.upstream(
                model=adapter.model, settings=services.answers.settings, reviewed=recording.reviewed
            )
            upstream = await (adapter.endpoint or services.client).forward("POST", COMPLETIONS, json_body=payload)
            if upstream.status_code != 200:
                raise upstream_refusal(upstream)
            data, text = _completion(upstream)
        except TuneloopError as error:
            await recording.failed(error)
            raise
    await recording.answered(text, adapter)
    data["model"] = body.model
    data["interaction_id"] = recording.interaction_id
    return JSONResponse(content=data, headers=recording.headers)


def _completion(response: httpx.Response) -> tuple[dict[str, Any], str]:
    """vLLM's completion and choice 0's text."""
    try:
        data = response.json()
        [choice] = [c for c in data["choices"] if c.get("index", 0) == 0]
        content = choice["message"].get("content")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise EngineRejected(f"the model server's answer is not a chat completion ({type(error).__name__})") from error
    return data, content if isinstance(content, str) else ""


async def _stream(
    services: Services, body: ChatCompletionRequest, recording: Recording, *, version: str | None
) -> Response:
    registry = services.registry
    adapter = registry.pin(version)
    try:
        payload = body.upstream(model=adapter.model, settings=services.answers.settings, reviewed=recording.reviewed)
        upstream = await (adapter.endpoint or services.client).open_stream(COMPLETIONS, json_body=payload)
        if upstream.status_code != 200:
            await upstream.aread()
            await upstream.aclose()
            raise upstream_refusal(upstream)
    except BaseException as error:
        await registry.unpin(adapter)
        if isinstance(error, TuneloopError):
            await recording.failed(error)
        raise
    relay = _relay(upstream, registry=registry, adapter=adapter, recording=recording, model=body.model)
    return StreamingResponse(relay, media_type="text/event-stream", headers=recording.headers)


async def _relay(
    upstream: httpx.Response,
    *,
    registry: AdapterRegistry,
    adapter: ServedAdapter,
    recording: Recording,
    model: str,
) -> AsyncIterator[bytes]:
    # The adapter stays pinned until the last byte, so a hot swap never unloads it mid-stream.
    stream = AnswerStream(model=model)
    ended = False
    failure: TuneloopError | None = None
    try:
        try:
            async for chunk in upstream.aiter_raw():
                if relayed := stream.feed(chunk):
                    if recording.first_text is None and stream.has_text:
                        recording.first_text = time.perf_counter()
                    yield relayed
            if rest := stream.flush():
                yield rest
            ended = True
        except httpx.HTTPError as error:
            failure = EngineUnavailable(f"the model server broke off the stream ({type(error).__name__})")
            yield _error_event(failure)
    finally:
        # Shielded: a caller who hangs up cancels this task, and the pin and the record must still be settled.
        with anyio.CancelScope(shield=True):
            await upstream.aclose()
            await registry.unpin(adapter)
            if failure is None and stream.error is not None:
                failure = EngineRejected(f"the model server failed mid-stream: {stream.error}")
            elif failure is None and not stream.finished:
                failure = (
                    EngineUnavailable("the model server ended the stream before it finished")
                    if ended
                    else StreamClosed(f"the caller closed the stream after {len(stream.text):,} characters")
                )
            if failure is None:
                await recording.answered(stream.text, adapter)
            else:
                await recording.failed(failure)


def _error_event(error: TuneloopError) -> bytes:
    body = error_body(error.code, error.message, hint=error.hint)
    return b"data: " + JSONResponse(content=body).body + b"\n\n"


def upstream_refusal(response: httpx.Response) -> TuneloopError:
    """vLLM's error answer as ours: its own refusals of a request are the caller's; the rest are the server's."""
    detail = response.text[:500]
    try:
        error = response.json().get("error")
        detail = str(error.get("message") if isinstance(error, dict) else error or detail)[:500]
    except (ValueError, AttributeError):
        pass
    status = response.status_code
    if status in (502, 503, 504):
        return EngineUnavailable(f"the model server answered {status}: {detail}", hint="Try again in a minute.")
    if 400 <= status < 500 and status != 404:  # a 404 is a version vLLM lost (it restarted): ours to fix
        return UpstreamRefused(f"the model server refused the request: {detail}")
    return EngineRejected(f"the model server failed the request ({status}): {detail}")


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
