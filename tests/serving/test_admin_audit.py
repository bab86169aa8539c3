"""Admin actions and their audit events, on SQLite and PostgreSQL: an allowed action is audited in its own
commit, a refusal or a failure afterwards on its own, and promotions reach the admin notifiers.

No vLLM here: the registry's client talks to an httpx MockTransport that answers adapter loads and lists as vLLM
does, since these tests are about the store and the audit trail (tests/serving/test_registry.py swaps on the
real vLLM).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from serving.access import AccessPolicy
from serving.admin import AdminService
from serving.client import InferenceClient
from serving.errors import Forbidden, NotFound
from serving.notify import AdminEvent, AdminEventKind, AdminEvents
from serving.registry import AdapterRegistry
from store import adapters as adapter_repo
from store import audit as audit_repo
from store.audit import AuditEntry
from store.db import make_engine, migrate, session_scope
from tests.accepting_engine import AcceptingEngine

ADMIN, EMPLOYEE = "U_ADMIN", "U_EMPLOYEE"


class Recorder:
    def __init__(self) -> None:
        self.events: list[AdminEvent] = []

    async def notify(self, event: AdminEvent) -> None:
        self.events.append(event)


class BrokenChannel:
    async def notify(self, event: AdminEvent) -> None:
        raise ConnectionError("the channel is down")


class BrokenLauncher:
    async def start(self, *, trigger: str, user_id: str | None, force: bool, audit: AuditEntry | None = None) -> int:
        raise RuntimeError("a bug in the launcher")


@dataclass
class World:
    engine: Engine
    registry: AdapterRegistry
    admin: AdminService
    events: AdminEvents
    recorder: Recorder

    def audit(self) -> list[tuple[str, str, str, str | None, dict[str, object]]]:
        with session_scope(self.engine) as session:
            rows = reversed(audit_repo.list_audit(session=session))
            return [(e.actor, e.action, e.outcome, e.target, e.detail) for e in rows]

    def active_in_store(self) -> str:
        with session_scope(self.engine) as session:
            active = adapter_repo.get_active_version(session=session)
        assert active is not None
        return active.version


@pytest.fixture
def engine(tmp_path: Path, store_url: str | None) -> Iterator[Engine]:
    url = store_url or f"sqlite:///{tmp_path / 'store.db'}"
    migrate(url)
    made = make_engine(url)
    yield made
    made.dispose()


@pytest.fixture
async def world(engine: Engine, tmp_path: Path) -> AsyncIterator[World]:
    client = InferenceClient("http://vllm.test", transport=httpx.MockTransport(AcceptingEngine()))
    with session_scope(engine) as session:
        adapter_repo.ensure_base_version(session=session)
        for name in ("v0001", "v0002"):
            folder = tmp_path / name
            folder.mkdir()
            (folder / "adapter_config.json").write_text("{}")
            adapter_repo.register_version(session=session, version=name, path=str(folder), run_id=None)
    registry = AdapterRegistry(client=client, engine=engine, base_model_name="tuneloop-base")
    await registry.restore()
    events, recorder = AdminEvents(), Recorder()
    events.attach(recorder)
    admin = AdminService(
        engine=engine,
        registry=registry,
        access=AccessPolicy(admins=frozenset({ADMIN})),
        launcher=BrokenLauncher(),
        events=events,
    )
    yield World(engine=engine, registry=registry, admin=admin, events=events, recorder=recorder)
    await registry.wait_idle()
    await client.aclose()


def refuse_ok_audit_events(engine: Engine) -> None:
    """A database that refuses to store successful audit events: the insert fails inside the action's commit."""
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_ok BEFORE INSERT ON auditevent WHEN NEW.outcome = 'ok' "
                    "BEGIN SELECT RAISE(ABORT, 'audit log refuses ok'); END"
                )
            )
            return
        connection.execute(
            text(
                "CREATE FUNCTION refuse_ok() RETURNS trigger AS $$ BEGIN "
                "IF NEW.outcome = 'ok' THEN RAISE EXCEPTION 'audit log refuses ok'; END IF; RETURN NEW; "
                "END $$ LANGUAGE plpgsql"
            )
        )
        connection.execute(
            text("CREATE TRIGGER refuse_ok BEFORE INSERT ON auditevent FOR EACH ROW EXECUTE FUNCTION refuse_ok()")
        )


async def test_a_promotion_is_audited_with_the_versions_it_swapped_and_published(world: World) -> None:
    adapter = await world.admin.promote(version="v0001", user_id=ADMIN, source="api")
    assert adapter.version == world.registry.active.version == world.active_in_store() == "v0001"
    assert world.audit() == [(ADMIN, "promote", "ok", "v0001", {"active": "v0001", "previous": "base"})]

    await world.events.wait_idle()
    [event] = world.recorder.events
    assert (event.kind, event.actor, event.source, event.version, event.previous) == (
        AdminEventKind.promoted,
        ADMIN,
        "api",
        "v0001",
        "base",
    )


async def test_a_rollback_is_audited_and_published(world: World) -> None:
    await world.admin.promote(version="v0001", user_id=ADMIN, source="cli")
    await world.admin.promote(version="v0002", user_id=ADMIN, source="cli")
    rolled = await world.admin.rollback(version=None, user_id=ADMIN, source="slack")
    assert rolled.version == world.active_in_store() == "v0001"
    assert world.audit()[-1] == (ADMIN, "rollback", "ok", None, {"active": "v0001", "previous": "v0002"})
    await world.events.wait_idle()
    assert [(e.kind, e.version, e.previous) for e in world.recorder.events] == [
        (AdminEventKind.promoted, "v0001", "base"),
        (AdminEventKind.promoted, "v0002", "v0001"),
        (AdminEventKind.rolled_back, "v0001", "v0002"),
    ]


async def test_when_the_audit_event_cannot_be_stored_the_promotion_does_not_happen(world: World) -> None:
    refuse_ok_audit_events(world.engine)
    with pytest.raises(Exception, match="audit log refuses ok") as raised:
        await world.admin.promote(version="v0001", user_id=ADMIN, source="api")

    assert world.registry.active.version == world.active_in_store() == "base"
    [(actor, action, outcome, target, detail)] = world.audit()
    assert (actor, action, outcome, target) == (ADMIN, "promote", "failed", "v0001")
    assert detail == {"error": f"unexpected: {type(raised.value).__name__}"}
    await world.events.wait_idle()
    assert world.recorder.events == []


async def test_an_unexpected_error_in_an_action_is_audited_as_failed_and_raised(world: World) -> None:
    with pytest.raises(RuntimeError, match="a bug in the launcher"):
        await world.admin.retrain(user_id=ADMIN, source="api")
    assert world.audit() == [(ADMIN, "retrain", "failed", None, {"error": "unexpected: RuntimeError"})]


async def test_a_known_failure_is_audited_with_its_message(world: World) -> None:
    with pytest.raises(NotFound):
        await world.admin.promote(version="v0404", user_id=ADMIN, source="api")
    assert world.audit() == [(ADMIN, "promote", "failed", "v0404", {"error": "adapter version v0404 does not exist"})]


async def test_a_refusal_is_audited_on_its_own_and_changes_nothing(world: World) -> None:
    with pytest.raises(Forbidden):
        await world.admin.promote(version="v0001", user_id=EMPLOYEE, source="slack")
    assert world.registry.active.version == world.active_in_store() == "base"
    assert world.audit() == [(EMPLOYEE, "promote", "refused", "v0001", {"reason": "not an admin"})]
    await world.events.wait_idle()
    assert world.recorder.events == []


async def test_a_notifier_that_fails_never_fails_the_promotion(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.events.attach(BrokenChannel())
    adapter = await world.admin.promote(version="v0001", user_id=ADMIN, source="api")
    await world.events.wait_idle()
    assert adapter.version == world.active_in_store() == "v0001"
    assert [e.version for e in world.recorder.events] == ["v0001"]  # the other notifier still got it
    assert "notify.failed kind=promoted version=v0001" in caplog.text
