"""The registry's store work runs in a thread, and a switch stays whole: the pointer always follows the commit.

No vLLM: the engine client answers every call with 200 (httpx.MockTransport); the store is real SQLite,
held busy by a second connection so that the commit is provably still running when the caller gives up.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
import pytest

from serving.client import InferenceClient
from serving.registry import AdapterRegistry
from store import adapters as adapter_repo
from store.db import make_engine, migrate, session_scope
from tests.accepting_engine import AcceptingEngine


async def test_a_promotion_cancelled_during_its_commit_still_switches_with_the_store(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    migrate(f"sqlite:///{path}")
    engine = make_engine(f"sqlite:///{path}")
    folder = tmp_path / "v0001"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    with session_scope(engine) as session:
        adapter_repo.ensure_base_version(session=session)
        adapter_repo.register_version(session=session, version="v0001", path=str(folder), run_id=None)
    client = InferenceClient("http://vllm.test", transport=httpx.MockTransport(AcceptingEngine()))
    registry = AdapterRegistry(client=client, engine=engine, base_model_name="tuneloop-base")
    await registry.load("v0001")  # loaded beforehand: the promotion's first wait is its commit

    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the commit waits for this lock
    promotion = asyncio.create_task(registry.promote("v0001"))
    await asyncio.sleep(0)  # one step: the task runs up to its first wait, the commit in its thread
    promotion.cancel()
    holder.execute("ROLLBACK")
    holder.close()

    with pytest.raises(asyncio.CancelledError):
        await promotion
    with session_scope(engine) as session:
        active = adapter_repo.get_active_version(session=session)
    assert active is not None and active.version == "v0001"
    assert registry.active.version == "v0001"  # the pointer followed the commit
    await client.aclose()
    engine.dispose()
