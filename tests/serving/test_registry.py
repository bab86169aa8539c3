"""The adapter registry on the real vLLM server: versions, atomic switching, instant rollback, draining."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from serving.client import InferenceClient
from serving.errors import Conflict, EngineRejected
from serving.registry import AdapterRegistry
from store import adapters as adapter_repo
from store.db import make_engine, migrate, session_scope

pytestmark = pytest.mark.slow


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    migrate(url)
    return make_engine(url)


@pytest.fixture
async def registry(engine: Engine, vllm_url: str, adapter_dirs: list[Path]) -> AsyncIterator[AdapterRegistry]:
    client = InferenceClient(vllm_url)
    with session_scope(engine) as session:
        adapter_repo.ensure_base_version(session=session)
        for number, folder in enumerate(adapter_dirs, start=1):
            adapter_repo.register_version(session=session, version=f"v{number:04d}", path=str(folder), run_id=None)
    registry = AdapterRegistry(
        client=client, engine=engine, base_model_name="tuneloop-base", prefix=f"r{uuid.uuid4().hex[:6]}-"
    )
    await registry.restore()
    yield registry
    for version in registry.loaded_versions:
        await registry.discard(version)
    await client.aclose()


async def served_models(registry: AdapterRegistry) -> set[str]:
    return {m["id"] for m in await registry._client.list_models()}


def active_in_store(engine: Engine) -> list[str]:
    with session_scope(engine) as session:
        return [v.version for v in adapter_repo.list_versions(session=session) if v.status == "active"]


async def test_promote_loads_each_version_under_its_own_name(registry: AdapterRegistry, engine: Engine) -> None:
    assert registry.active.version == "base"
    first = await registry.promote("v0001")
    assert first.model == registry.served_name("v0001") != registry.served_name("v0002")
    assert registry.active == first
    assert first.model in await served_models(registry)
    assert active_in_store(engine) == ["v0001"]


async def test_the_previous_version_stays_loaded_and_older_ones_are_unloaded(registry: AdapterRegistry) -> None:
    await registry.promote("v0001")
    await registry.promote("v0002")
    await registry.promote("v0003")
    await registry.wait_idle()
    served = await served_models(registry)
    assert registry.served_name("v0003") in served
    assert registry.served_name("v0002") in served  # kept for an instant rollback
    assert registry.served_name("v0001") not in served
    assert sorted(registry.loaded_versions) == ["base", "v0002", "v0003"]


async def test_rollback_goes_to_the_previous_version_without_loading(registry: AdapterRegistry, engine: Engine) -> None:
    await registry.promote("v0001")
    await registry.promote("v0002")
    started = time.perf_counter()
    rolled = await registry.rollback()
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert rolled.version == "v0001"
    assert active_in_store(engine) == ["v0001"]
    assert elapsed_ms < 1000
    back_to_base = await registry.rollback("base")
    assert back_to_base.model == "tuneloop-base"
    with pytest.raises(Conflict):
        await registry.rollback("base")


async def test_a_pinned_version_is_not_unloaded_until_its_request_finishes(registry: AdapterRegistry) -> None:
    await registry.promote("v0001")
    pinned = registry.pin()
    assert pinned.version == "v0001"
    await registry.promote("v0002")
    await registry.promote("v0003")  # v0001 is now neither active nor previous
    await asyncio.sleep(0)  # let the unload task run up to its wait
    assert registry.served_name("v0001") in await served_models(registry)
    await registry.unpin(pinned)
    await registry.wait_idle()
    assert registry.served_name("v0001") not in await served_models(registry)


async def test_a_broken_adapter_is_refused_and_serving_continues(
    registry: AdapterRegistry, engine: Engine, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    with session_scope(engine) as session:
        adapter_repo.register_version(session=session, version="v0009", path=str(broken), run_id=None)
    await registry.promote("v0001")
    with pytest.raises(EngineRejected):
        await registry.promote("v0009")
    assert registry.active.version == "v0001"
    assert active_in_store(engine) == ["v0001"]


async def test_an_answer_after_vllm_forgot_its_adapters_reloads_them_and_records_who_answered(
    registry: AdapterRegistry, engine: Engine
) -> None:
    from serving.answers import AnswerService, AnswerSettings, Question
    from store import interactions as interaction_repo

    await registry.promote("v0001")
    # What a vLLM restart does to runtime-loaded adapters: they are gone, the registry still names them.
    await registry._client.unload_adapter(name=registry.served_name("v0001"))
    answers = AnswerService(
        engine=engine,
        client=registry._client,
        registry=registry,
        settings=AnswerSettings(system_prompt="S", max_question_chars=100, max_answer_tokens=8, temperature=0.0),
    )
    answer = await answers.ask(Question(text="Name a colour.", user_id="U1", source="test"))
    assert answer.adapter_version == "v0001"
    assert registry.served_name("v0001") in await served_models(registry)
    with session_scope(engine) as session:
        stored = interaction_repo.get_interaction(session=session, interaction_id=answer.interaction_id)
    assert stored is not None and stored.status == "answered" and stored.adapter_version == "v0001"


# --- the store is the one truth: several processes follow it ---------------------------------------------------


def registry_beside(registry: AdapterRegistry, engine: Engine) -> AdapterRegistry:
    """What another service process on the same database and vLLM server holds: its own registry."""
    return AdapterRegistry(
        client=registry._client, engine=engine, base_model_name="tuneloop-base", prefix=registry._prefix
    )


async def test_a_promotion_racing_a_restore_leaves_the_promoted_version_active(
    registry: AdapterRegistry, engine: Engine
) -> None:
    # The restore starts first (as after a vLLM restart) and reads the store before the promotion commits.
    _restored, promoted = await asyncio.gather(registry.restore(), registry.promote("v0001"))
    assert promoted.version == "v0001"
    assert registry.active.version == "v0001"
    assert active_in_store(engine) == ["v0001"]
    # And the other order: a restore after the promotion reads what the promotion stored.
    await asyncio.gather(registry.promote("v0002"), registry.restore())
    assert registry.active.version == "v0002" and registry.previous is not None
    assert registry.previous.version == "v0001"


async def test_another_process_follows_a_promotion_and_a_rollback(registry: AdapterRegistry, engine: Engine) -> None:
    other = registry_beside(registry, engine)
    await other.restore()
    assert await other.follow_store() is False  # nothing changed since it restored

    await registry.promote("v0001")
    assert await other.follow_store() is True
    assert other.active.version == "v0001"
    assert other.served_name("v0001") in await served_models(other)

    await registry.promote("v0002")
    await other.follow_store()
    assert other.active.version == "v0002"
    assert other.previous is not None and other.previous.version == "v0001"  # loaded there for an instant rollback

    await other.rollback()  # made in the other process this time
    assert await registry.follow_store() is True
    assert registry.active.version == "v0001"
    assert active_in_store(engine) == ["v0001"]


async def test_a_version_another_process_promoted_that_cannot_load_here_leaves_serving_as_it_was(
    registry: AdapterRegistry, engine: Engine, tmp_path: Path
) -> None:
    await registry.promote("v0001")
    # The other process promoted a version whose files this host cannot read (a folder that is not shared).
    with session_scope(engine) as session:
        adapter_repo.register_version(session=session, version="v0008", path=str(tmp_path / "absent"), run_id=None)
        adapter_repo.mark_active(session=session, version="v0008")
    assert await registry.follow_store() is False
    assert registry.active.version == "v0001"
    async with registry.use() as adapter:  # requests go on, to the version that can serve
        assert adapter.version == "v0001"
    # Not tried again on every poll: only after the pause.
    assert await registry.follow_store(retry_after_s=3600) is False
