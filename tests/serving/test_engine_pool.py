"""Several vLLM servers behind one client: a version serves only once every server has loaded and confirmed it.

Two real vLLM OpenAI servers (CPU build, the real SmolLM2-135M); the second one is started for this module.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from serving.client import InferenceClient
from serving.errors import EngineUnavailable
from serving.registry import AdapterRegistry
from store import adapters as adapter_repo
from store.db import make_engine, migrate, session_scope
from tests.conftest import free_port, running_engine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def second_vllm_url(base_model_dir: Path, vllm_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second real vLLM server beside the session's one (`vllm_url` first, so that they do not start at once)."""
    yield from running_engine(
        base_model_dir, tmp_path_factory.mktemp("vllm2"), max_model_len=1024, max_loras=2, kv_gib=1
    )


@pytest.fixture
def engine(tmp_path: Path, adapter_dirs: list[Path]) -> Engine:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    migrate(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        adapter_repo.ensure_base_version(session=session)
        adapter_repo.register_version(session=session, version="v0001", path=str(adapter_dirs[0]), run_id=None)
    return engine


async def make_registry(engine: Engine, urls: list[str]) -> AdapterRegistry:
    registry = AdapterRegistry(
        client=InferenceClient(urls), engine=engine, base_model_name="tuneloop-base", prefix=f"p{uuid.uuid4().hex[:6]}-"
    )
    await registry.restore()
    return registry


async def models_on(url: str) -> dict[str, str | None]:
    async with httpx.AsyncClient(base_url=url) as http:
        return {m["id"]: m.get("root") for m in (await http.get("/v1/models")).json()["data"]}


async def successes_on(url: str) -> float:
    """vLLM's own count of finished requests (its Prometheus metrics); tests here run one at a time."""
    async with httpx.AsyncClient(base_url=url) as http:
        text = (await http.get("/metrics")).text
    pattern = r"^vllm:request_success_total(?:\{[^}]*\})? ([0-9.e+]+)$"
    return sum(float(value) for value in re.findall(pattern, text, flags=re.MULTILINE))


@pytest.fixture
async def pool_registry(engine: Engine, vllm_url: str, second_vllm_url: str) -> AsyncIterator[AdapterRegistry]:
    registry = await make_registry(engine, [vllm_url, second_vllm_url])
    yield registry
    for version in registry.loaded_versions:
        await registry.discard(version)
    await registry._client.aclose()


async def test_a_version_serves_only_once_every_server_has_it_and_requests_go_to_each(
    pool_registry: AdapterRegistry, vllm_url: str, second_vllm_url: str, adapter_dirs: list[Path]
) -> None:
    adapter = await pool_registry.promote("v0001")
    for url in (vllm_url, second_vllm_url):
        assert (await models_on(url)).get(adapter.model) == str(adapter_dirs[0].resolve()), url

    before = [await successes_on(url) for url in (vllm_url, second_vllm_url)]
    for _ in range(4):
        async with pool_registry.use() as serving:
            await pool_registry._client.chat(
                model=serving.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0.0
            )
    after = [await successes_on(url) for url in (vllm_url, second_vllm_url)]
    assert [b - a for a, b in zip(before, after, strict=True)] == [2, 2]


async def test_a_server_that_cannot_load_the_version_stops_the_promotion(engine: Engine, vllm_url: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    registry = await make_registry(engine, [vllm_url, dead])
    try:
        with pytest.raises(EngineUnavailable) as refused:
            await registry.promote("v0001")
        assert dead in refused.value.message  # which server, so that an operator knows where to look
        assert registry.active.version == "base"
        with session_scope(engine) as session:
            active = adapter_repo.get_active_version(session=session)
        assert active is not None and active.version == "base"
        # The server that did load it unloaded it again: nothing can route to a half-loaded version.
        assert registry.served_name("v0001") not in await models_on(vllm_url)
    finally:
        await registry._client.aclose()
