"""A service with no model server (a port with nothing listening), on SQLite or PostgreSQL, and one caller per role.

No vLLM runs for these tests on purpose: they are about the HTTP edge (credentials, roles, bounds), and a dead
engine keeps them fast. Every question is still recorded, as failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ApiCaller, RunningService, free_port, make_settings
from tests.store.conftest import _postgres_database, _postgres_probe  # noqa: F401 (fixture re-exported)
from tuneloop.settings import Settings

EMPLOYEE, REVIEWER, ADMIN = "U_EMPLOYEE", "U_REVIEWER", "U_ADMIN"


@dataclass
class Callers:
    running: RunningService
    employee: ApiCaller
    reviewer: ApiCaller
    admin: ApiCaller

    @property
    def url(self) -> str:
        return self.running.url

    def close(self) -> None:
        for caller in (self.employee, self.reviewer, self.admin):
            caller.close()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """None: the default SQLite file in the data dir; else a fresh PostgreSQL database, dropped afterwards."""
    if request.param == "sqlite":
        yield None
        return
    yield from _postgres_database(request.getfixturevalue("_postgres_probe"))


def dead_engine_settings(tmp_path: Path, store_url: str | None, **overrides: object) -> Settings:
    return make_settings(
        tmp_path,
        base_model_dir=tmp_path / "no-model",
        vllm_url=f"http://127.0.0.1:{free_port()}",
        **({"store": {"url": store_url}} if store_url else {}),
        **overrides,
    )


@pytest.fixture
def dead_engine_service(tmp_path: Path, store_url: str | None) -> Iterator[RunningService]:
    running = RunningService(dead_engine_settings(tmp_path, store_url)).start(wait_ready=False)
    yield running
    running.stop()


@pytest.fixture
def callers(dead_engine_service: RunningService) -> Iterator[Callers]:
    made = Callers(
        running=dead_engine_service,
        employee=ApiCaller(dead_engine_service, EMPLOYEE),
        reviewer=ApiCaller(dead_engine_service, REVIEWER),
        admin=ApiCaller(dead_engine_service, ADMIN),
    )
    yield made
    made.close()
