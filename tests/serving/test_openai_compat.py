"""The OpenAI-compatible endpoint with the official `openai` client, and hot-swaps under load."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import openai
import pytest

from store import adapters as adapter_repo
from store.db import session_scope
from tests.conftest import RunningService

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "user", "content": "Name a colour."}]


def test_openai_client_chat_and_stream(service: RunningService) -> None:
    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused")
    models = [m.id for m in client.models.list()]
    assert models[0] == "tuneloop"
    reply = client.chat.completions.create(model="tuneloop", messages=MESSAGES, max_tokens=16, temperature=0)  # type: ignore[arg-type]
    assert reply.model == "tuneloop"
    assert reply.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="tuneloop",
            messages=MESSAGES,
            max_tokens=16,  # type: ignore[arg-type]
            temperature=0,
            stream=True,
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == reply.choices[0].message.content


def test_openai_client_sees_a_clear_error_for_an_unknown_model(service: RunningService) -> None:
    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=MESSAGES, max_tokens=4)  # type: ignore[arg-type]


async def test_no_request_fails_while_adapters_are_hot_swapped(
    service: RunningService, adapter_dirs: list[Path]
) -> None:
    with session_scope(service.service.services.engine) as session:
        for number, folder in enumerate(adapter_dirs, start=1):
            adapter_repo.register_version(session=session, version=f"v{number:04d}", path=str(folder), run_id=None)
    client = openai.AsyncOpenAI(base_url=f"{service.url}/v1", api_key="unused", max_retries=0)

    async def one_request(index: int) -> str:
        stream = await client.chat.completions.create(
            model="tuneloop",
            messages=[{"role": "user", "content": f"Count to {index}."}],
            max_tokens=24,
            temperature=0,
            stream=True,
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def swaps() -> list[str]:
        active = []
        async with httpx.AsyncClient(base_url=service.url, timeout=120) as http:
            for version in ("v0001", "v0002", "v0003", "v0001", "base", "v0002"):
                response = await http.post("/admin/promote", json={"user": "U_ADMIN", "version": version})
                assert response.status_code == 200, response.text
                active.append(response.json()["active"])
        return active

    requests = [asyncio.create_task(one_request(i)) for i in range(12)]
    swapped = await swaps()
    results = await asyncio.gather(*requests, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert swapped == ["v0001", "v0002", "v0003", "v0001", "base", "v0002"]
    assert all(isinstance(r, str) and r for r in results)
    health = httpx.get(f"{service.url}/healthz").json()
    assert health["active_adapter"] == "v0002"
