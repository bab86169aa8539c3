"""The OpenAI-compatible endpoint with the official `openai` client and the real model, and hot-swaps under load.

Every completion is an interaction (source `openai`) of the token's user. The fast tests of this surface (no
model server needed: credentials, bounds, unknown names, a dead engine) are in test_openai_fast.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from store import adapters as adapter_repo
from store import interactions as interaction_repo
from store.db import session_scope
from store.models import Interaction
from tests.conftest import RunningService, bearer, issue_token

pytestmark = pytest.mark.slow
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name a colour."}]
CONVERSATION: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    *MESSAGES,
]
USER = "U_CALLER"


def interaction(service: RunningService, interaction_id: int, *, timeout_s: float = 10) -> Interaction:
    """The stored interaction once its outcome is recorded (a stream's is recorded as its last event goes out)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with session_scope(service.service.services.engine) as session:
            found = interaction_repo.get_interaction(session=session, interaction_id=interaction_id)
        assert found is not None
        if found.status != "pending" or time.monotonic() > deadline:
            return found
        time.sleep(0.05)  # polling the store: the service records in its own thread


def register_adapters(service: RunningService, adapter_dirs: list[Path]) -> None:
    with session_scope(service.service.services.engine) as session:
        for number, folder in enumerate(adapter_dirs, start=1):
            adapter_repo.register_version(session=session, version=f"v{number:04d}", path=str(folder), run_id=None)


def promote(service: RunningService, version: str) -> str:
    response = httpx.post(
        f"{service.url}/admin/promote", json={"version": version}, headers=bearer(service, "U_ADMIN"), timeout=120
    )
    assert response.status_code == 200, response.text
    active: str = response.json()["active"]
    return active


def test_openai_client_chat_and_stream_are_recorded_as_the_tokens_user(service: RunningService) -> None:
    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key=issue_token(service, USER), max_retries=0)
    assert [m.id for m in client.models.list()] == ["tuneloop", "tuneloop-base"]

    raw = client.chat.completions.with_raw_response.create(
        model="tuneloop",
        messages=MESSAGES,
        max_tokens=16,
        temperature=0,
        user="U_SOMEONE_ELSE",
    )
    reply = raw.parse()
    assert reply.model == "tuneloop"
    answer = reply.choices[0].message.content
    assert answer
    whole = interaction(service, int(raw.headers["X-Tuneloop-Interaction-Id"]))
    assert (reply.model_extra or {})["interaction_id"] == whole.id
    assert (whole.source, whole.user_id, whole.status) == ("openai", USER, "answered")
    assert (whole.question, whole.answer, whole.adapter_version) == ("Name a colour.", answer.strip(), "base")
    assert whole.latency_ms is not None and whole.latency_ms > 0

    raw_stream = client.chat.completions.with_raw_response.create(
        model="tuneloop",
        messages=CONVERSATION,
        max_tokens=16,
        temperature=0,
        stream=True,
        user="U_SOMEONE_ELSE",
    )
    chunks: list[ChatCompletionChunk] = list(raw_stream.parse())
    assert {c.model for c in chunks} == {"tuneloop"}
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed
    stream = interaction(service, int(raw_stream.headers["X-Tuneloop-Interaction-Id"]))
    assert (stream.source, stream.user_id, stream.status) == ("openai", USER, "answered")
    assert (stream.question, stream.answer) == ("Name a colour.", streamed.strip())
    assert stream.context == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]

    # The same question, whole and streamed, gets the same answer at temperature 0.
    same = client.chat.completions.create(
        model="tuneloop",
        messages=MESSAGES,
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in same if c.choices) == answer


def test_the_base_model_is_served_under_its_own_name(service: RunningService) -> None:
    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key=issue_token(service, USER), max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="tuneloop-base", messages=MESSAGES, max_tokens=8, temperature=0.8, n=2, seed=7
    )
    reply = raw.parse()
    assert reply.model == "tuneloop-base" and len(reply.choices) == 2
    stored = interaction(service, int(raw.headers["X-Tuneloop-Interaction-Id"]))
    assert (stored.adapter_version, stored.answer) == ("base", (reply.choices[0].message.content or "").strip())


def test_a_request_vllm_refuses_is_a_400_and_recorded_failed(service: RunningService) -> None:
    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key=issue_token(service, USER), max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError, match="greedy") as raised:
            # vLLM's own rule: several choices need sampling; the caller can fix it, so not a 5xx (no retries).
            client.chat.completions.create(model="tuneloop", messages=MESSAGES, temperature=0, n=2, stream=stream)
        assert isinstance(raised.value.body, dict)
        stored = interaction(service, int(raised.value.body["interaction_id"]))
        assert (stored.source, stored.user_id, stored.status) == ("openai", USER, "failed")
        assert stored.error is not None and "engine_rejected" in stored.error and "greedy" in stored.error


def test_only_the_alias_and_the_base_model_are_served(service: RunningService, adapter_dirs: list[Path]) -> None:
    register_adapters(service, adapter_dirs)
    # v0001 served, then base again: v0001 stays loaded in vLLM (for an instant rollback) but is no model name here.
    assert promote(service, "v0001") == "v0001"
    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key=issue_token(service, USER), max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="tuneloop", messages=MESSAGES, max_tokens=8)
    assert interaction(service, int(raw.headers["X-Tuneloop-Interaction-Id"])).adapter_version == "v0001"
    assert promote(service, "base") == "base"
    loaded = service.service.services.registry
    assert "v0001" in loaded.loaded_versions

    for name in ("no-such-model", loaded.served_name("v0001"), loaded.served_name("v0002")):
        with pytest.raises(openai.NotFoundError, match="does not exist") as raised:
            client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=4)
        assert raised.value.body is not None and "model_not_found" in str(raised.value.body)
    assert [m.id for m in client.models.list()] == ["tuneloop", "tuneloop-base"]


async def test_no_request_fails_while_adapters_are_hot_swapped(
    service: RunningService, adapter_dirs: list[Path]
) -> None:
    register_adapters(service, adapter_dirs)
    client = openai.AsyncOpenAI(base_url=f"{service.url}/v1", api_key=issue_token(service, USER), max_retries=0)

    async def one_request(index: int) -> tuple[int, str]:
        raw = await client.chat.completions.with_raw_response.create(
            model="tuneloop",
            messages=[{"role": "user", "content": f"Count to {index}."}],
            max_tokens=24,
            temperature=0,
            stream=True,
        )
        text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
        return int(raw.headers["X-Tuneloop-Interaction-Id"]), text

    async def swaps() -> list[str]:
        active = []
        headers = bearer(service, "U_ADMIN")
        async with httpx.AsyncClient(base_url=service.url, timeout=120, headers=headers) as http:
            for version in ("v0001", "v0002", "v0003", "v0001", "base", "v0002"):
                response = await http.post("/admin/promote", json={"version": version})
                assert response.status_code == 200, response.text
                active.append(response.json()["active"])
        return active

    requests = [asyncio.create_task(one_request(i)) for i in range(12)]
    swapped = await swaps()
    results = await asyncio.gather(*requests, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert swapped == ["v0001", "v0002", "v0003", "v0001", "base", "v0002"]
    assert all(isinstance(r, tuple) and r[1] for r in results)
    health = httpx.get(f"{service.url}/healthz").json()
    assert health["active_adapter"] == "v0002"
    for result in results:
        assert isinstance(result, tuple)
        stored = await asyncio.to_thread(interaction, service, result[0])
        assert (stored.status, stored.answer) == ("answered", result[1].strip())
        assert stored.adapter_version in {"base", "v0001", "v0002", "v0003"}


def test_an_abandoned_stream_is_recorded_and_its_version_still_unloads(
    service: RunningService, adapter_dirs: list[Path]
) -> None:
    register_adapters(service, adapter_dirs)
    assert promote(service, "v0001") == "v0001"
    body = {"model": "tuneloop", "messages": MESSAGES, "max_tokens": 200, "temperature": 0.8, "stream": True}

    with httpx.stream(
        "POST", f"{service.url}/v1/chat/completions", json=body, headers=bearer(service, USER), timeout=60
    ) as response:
        assert response.status_code == 200
        next(response.iter_lines())  # the first event; then the caller hangs up
        interaction_id = int(response.headers["X-Tuneloop-Interaction-Id"])

    stored = interaction(service, interaction_id)
    assert (stored.status, stored.adapter_version) == ("failed", None)
    assert stored.error is not None and stored.error.startswith("client_closed")
    # v0001 served that stream; two promotions later it is unloaded, which waits for its requests to end.
    assert promote(service, "v0002") == "v0002" and promote(service, "v0003") == "v0003"
    registry = service.service.services.registry
    deadline = time.monotonic() + 30
    while "v0001" in registry.loaded_versions and time.monotonic() < deadline:
        time.sleep(0.1)  # polling: the unload runs as housekeeping in the service's loop
    assert registry.loaded_versions == ["base", "v0002", "v0003"]
