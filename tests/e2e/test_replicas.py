"""Replicas agree: two service processes on one database converge on a promotion or rollback made on either.

Real vLLM (the session's server, shared by both processes as a small company might), real SQLite and PostgreSQL;
the second service is a separate OS process (`tuneloop serve`). PostgreSQL tells the other process by
LISTEN/NOTIFY; SQLite is polled.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from store import adapters as adapter_repo
from store.db import session_scope
from tests.conftest import ApiCaller, RunningService, ServeProcess, make_settings
from tests.store.conftest import _postgres_database, _postgres_probe  # noqa: F401 (fixture re-exported)

pytestmark = pytest.mark.slow

# The goal: every process converges within 2 s of a change made anywhere.
CONVERGENCE_S = 2.0


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    yield from _postgres_database(request.getfixturevalue("_postgres_probe"))


@pytest.fixture
def first(
    tmp_path: Path, base_model_dir: Path, vllm_url: str, store_url: str | None, adapter_dirs: list[Path]
) -> Iterator[RunningService]:
    overrides = {"store": {"url": store_url}} if store_url else {}
    running = RunningService(make_settings(tmp_path, base_model_dir=base_model_dir, vllm_url=vllm_url, **overrides))
    with session_scope(running.service.services.engine) as session:
        for number, folder in enumerate(adapter_dirs[:2], start=1):
            adapter_repo.register_version(session=session, version=f"v000{number}", path=str(folder), run_id=None)
    yield running.start()
    running.stop()


@pytest.fixture
def second(first: RunningService, tmp_path: Path) -> Iterator[ServeProcess]:
    process = ServeProcess(first.settings, data_dir=tmp_path / "second").wait_ready()
    yield process
    process.stop()


def active_on(url: str) -> str:
    return str(httpx.get(f"{url}/healthz", timeout=5).json()["active_adapter"])


def converges(url: str, version: str) -> float:
    """Seconds until the service at `url` serves `version`; fails past the goal."""
    started = time.monotonic()
    while active_on(url) != version:
        elapsed = time.monotonic() - started
        assert elapsed < CONVERGENCE_S, f"{url} still serves {active_on(url)} {elapsed:.2f} s after {version}"
        time.sleep(0.02)  # sampling the other process's state to time it, not standing in for an event
    return time.monotonic() - started


def test_two_processes_converge_after_a_promotion_or_rollback_made_on_either(
    first: RunningService, second: ServeProcess
) -> None:
    admin = ApiCaller(first, "U_ADMIN")  # one token: both processes read the same database
    with httpx.Client(base_url=second.url, headers={"Authorization": f"Bearer {admin.token}"}, timeout=60) as on_second:
        promoted = admin.post("/admin/promote", json={"version": "v0001"})
        assert promoted.status_code == 200, promoted.text
        converges(second.url, "v0001")

        promoted = on_second.post("/admin/promote", json={"version": "v0002"})
        assert promoted.status_code == 200, promoted.text
        converges(first.url, "v0002")

        rolled = admin.post("/admin/rollback", json={})
        assert rolled.status_code == 200 and rolled.json()["active"] == "v0001", rolled.text
        converges(second.url, "v0001")

        # The second process answers with the version it followed, and records it.
        asked = on_second.post("/api/ask", json={"question": "Name a colour."})
        assert asked.status_code == 200, asked.text
        assert asked.json()["adapter_version"] == "v0001"
    admin.close()
    with session_scope(first.service.services.engine) as session:
        active = [v.version for v in adapter_repo.list_versions(session=session) if v.status == "active"]
    assert active == ["v0001"]
