"""Retention: what the policy prunes, what it never prunes, and that a dry run removes nothing.

Real folders under a temp data dir and a real store, on SQLite and on PostgreSQL (the store fixtures of
tests/store). No vLLM: nothing here serves an adapter.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import select
from typer.testing import CliRunner

from serving.client import InferenceClient
from serving.errors import Conflict
from serving.registry import AdapterRegistry
from store import adapters as adapter_repo
from store import locks as lock_repo
from store import runs as run_repo
from store.db import make_engine, migrate, session_scope
from store.models import AdapterStatus, AdapterVersion, AuditEvent, RunStatus, TrainingRun, utcnow
from tests.store.conftest import _postgres_probe, db_url, empty_db_url  # noqa: F401  (SQLite and PostgreSQL)
from tuneloop.cli import app
from tuneloop.cycle import CYCLE_LOCK, LOCK_TTL_S
from tuneloop.retention import PruneKind, plan_retention, prune, prune_after_nightly
from tuneloop.scheduler import NIGHTLY_JOB_ID, build_scheduler
from tuneloop.settings import Settings

ADAPTER_BYTES = 4096
OLD = timedelta(days=60)
STRICTEST = {"keep_days": 0, "keep_runs": 0, "keep_rejected": 0, "keep_superseded": 0}


def settings_for(tmp_path: Path, url: str, **retention: Any) -> Settings:
    return Settings(data_dir=tmp_path / "var", store={"url": url}, retention=retention)  # type: ignore[arg-type]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:  # noqa: F811
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def add_version(
    engine: Engine, settings: Settings, name: str, *, status: str = AdapterStatus.ready, pinned: bool = False
) -> Path:
    """A trained version as a cycle leaves it: its run (finished long ago), run folder and adapter folder."""
    folder = settings.adapters_dir / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * ADAPTER_BYTES)
    with session_scope(engine) as session:
        run = run_repo.create_run(session=session, trigger="nightly", triggered_by=None)
        assert run.id is not None
        run_repo.update_run(session=session, run_id=run.id, status=RunStatus.running)
        finished = RunStatus.rejected if status == AdapterStatus.rejected else RunStatus.succeeded
        run_repo.update_run(session=session, run_id=run.id, status=finished, adapter_version=name)
        run_dir = settings.runs_dir / f"run-{run.id:04d}"
        run_dir.mkdir(parents=True)
        (run_dir / "sft.jsonl").write_text('{"messages": []}\n')
        row = adapter_repo.register_version(session=session, version=name, path=str(folder.resolve()), run_id=run.id)
        row.status = status
        row.pinned = pinned
        row.created_at = utcnow() - OLD
        session.add(row)
        stored_run = session.get(TrainingRun, run.id)
        assert stored_run is not None
        stored_run.created_at = stored_run.finished_at = utcnow() - OLD
        session.add(stored_run)
        session.commit()
    return folder


def promote(engine: Engine, name: str) -> None:
    with session_scope(engine) as session:
        adapter_repo.mark_active(session=session, version=name)


@pytest.fixture
def history(tmp_path: Path, db_url: str, engine: Engine) -> dict[str, Path]:  # noqa: F811
    """Seven old versions: two superseded, two rejected, the previous, the active, and a pinned one never served."""
    settings = settings_for(tmp_path, db_url)
    with session_scope(engine) as session:
        adapter_repo.ensure_base_version(session=session)
    folders = {
        "v0001": add_version(engine, settings, "v0001"),
        "v0002": add_version(engine, settings, "v0002"),
        "v0003": add_version(engine, settings, "v0003", status=AdapterStatus.rejected),
        "v0004": add_version(engine, settings, "v0004"),
        "v0005": add_version(engine, settings, "v0005", status=AdapterStatus.rejected),
        "v0006": add_version(engine, settings, "v0006"),
        "v0007": add_version(engine, settings, "v0007", pinned=True),
    }
    for name in ("v0001", "v0002", "v0004", "v0006"):
        promote(engine, name)  # v0006 active, v0004 the previous one
    return folders


def versions(engine: Engine) -> dict[str, AdapterVersion]:
    with session_scope(engine) as session:
        return {row.version: row for row in adapter_repo.list_versions(session=session)}


def audit_events(engine: Engine) -> list[AuditEvent]:
    with session_scope(engine) as session:
        return list(session.exec(select(AuditEvent).order_by(AuditEvent.id)).all())  # type: ignore[arg-type]


def run_folder_of(engine: Engine, settings: Settings, name: str) -> Path:
    run_id = versions(engine)[name].run_id
    assert run_id is not None
    return settings.runs_dir / f"run-{run_id:04d}"


def every_file(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


# --- what is never pruned ---------------------------------------------------------------------------------------
def test_the_strictest_policy_never_removes_the_active_previous_or_pinned_version(
    tmp_path: Path,
    db_url: str,  # noqa: F811
    engine: Engine,
    history: dict[str, Path],
) -> None:
    settings = settings_for(tmp_path, db_url, **STRICTEST)
    report = prune(settings=settings, engine=engine, actor="host:ops", source="cli")
    rows = versions(engine)
    for name in ("v0006", "v0004", "v0007"):  # active, previous, pinned
        assert (history[name] / "adapter_model.safetensors").stat().st_size == ADAPTER_BYTES, name
        assert rows[name].pruned_at is None, name
        assert run_folder_of(engine, settings, name).is_dir(), f"{name}'s training files went with the policy"
    for name in ("v0001", "v0002", "v0003", "v0005"):
        assert not history[name].exists(), name
        assert rows[name].pruned_at is not None, name
        assert not run_folder_of(engine, settings, name).exists(), name
    assert rows["v0006"].status == AdapterStatus.active
    assert {k.version: k.reasons for k in report.plan.kept} == {
        "v0006": ["active"],
        "v0004": ["previous (instant rollback)"],
        "v0007": ["pinned"],
    }


def test_unpinning_lets_the_policy_prune_it(
    tmp_path: Path,
    db_url: str,  # noqa: F811
    engine: Engine,
    history: dict[str, Path],
) -> None:
    settings = settings_for(tmp_path, db_url, **STRICTEST)
    with session_scope(engine) as session:
        adapter_repo.set_pinned(session=session, version="v0007", pinned=False)
    prune(settings=settings, engine=engine, actor="host:ops", source="cli")
    assert not history["v0007"].exists()
    assert history["v0006"].exists() and history["v0004"].exists()


def test_after_a_rollback_the_new_active_and_previous_are_kept(
    tmp_path: Path,
    db_url: str,  # noqa: F811
    engine: Engine,
    history: dict[str, Path],
) -> None:
    promote(engine, "v0002")  # an admin rolled back to an older version: v0002 active, v0006 previous
    settings = settings_for(tmp_path, db_url, **STRICTEST)
    prune(settings=settings, engine=engine, actor="host:ops", source="cli")
    assert history["v0002"].exists() and history["v0006"].exists()
    assert not history["v0004"].exists()  # no longer previous: an old superseded version now


# --- what the policy removes ------------------------------------------------------------------------------------
def test_it_removes_exactly_what_the_policy_says_and_audits_it(
    tmp_path: Path,
    db_url: str,  # noqa: F811
    engine: Engine,
    history: dict[str, Path],
) -> None:
    settings = settings_for(tmp_path, db_url, keep_days=30, keep_runs=0, keep_rejected=1, keep_superseded=0)
    young = add_version(engine, settings, "v0008")  # beyond every count, but only days old
    with session_scope(engine) as session:
        row = adapter_repo.get_version(session=session, version="v0008")
        assert row is not None
        row.created_at = utcnow() - timedelta(days=3)
        session.add(row)
        session.commit()

    report = prune(settings=settings, engine=engine, actor="host:ops", source="cli")

    pruned = {item.version for item in report.removed if item.kind == PruneKind.adapter}
    assert pruned == {"v0001", "v0002", "v0003"}  # superseded, superseded, the older of two rejected
    assert not report.failed
    assert all(not history[name].exists() for name in pruned)
    assert history["v0005"].exists()  # the newest rejected one is kept for a look
    assert young.exists()
    rows = versions(engine)
    assert {name for name, row in rows.items() if row.pruned_at is not None} == pruned
    assert report.freed_bytes >= 3 * ADAPTER_BYTES
    assert report.freed_bytes == sum(item.bytes for item in report.removed)
    # The run folders of the pruned versions went with them; those of versions that stay did not.
    removed_runs = {item.run_id for item in report.removed if item.kind == PruneKind.run}
    assert removed_runs == {rows[name].run_id for name in pruned}
    events = [e for e in audit_events(engine) if e.action == "retention.prune"]
    assert len(events) == 1
    assert (events[0].actor, events[0].source, events[0].outcome) == ("host:ops", "cli", "ok")
    assert sorted(events[0].detail["versions"]) == sorted(pruned)


def test_a_second_run_finds_nothing_more(
    tmp_path: Path,
    db_url: str,  # noqa: F811
    engine: Engine,
    history: dict[str, Path],
) -> None:
    settings = settings_for(tmp_path, db_url, **STRICTEST)
    prune(settings=settings, engine=engine, actor="host:ops", source="cli")
    again = plan_retention(settings=settings, engine=engine)
    assert again.items == []


def test_a_pruned_version_cannot_be_served_again(
    tmp_path: Path,
    db_url: str,  # noqa: F811
    engine: Engine,
    history: dict[str, Path],
) -> None:
    settings = settings_for(tmp_path, db_url, **STRICTEST)
    prune(settings=settings, engine=engine, actor="host:ops", source="cli")
    registry = AdapterRegistry(client=InferenceClient("http://127.0.0.1:9"), engine=engine, base_model_name="base")
    with pytest.raises(Conflict) as refused:
        asyncio.run(registry.load("v0001"))
    assert "pruned by retention" in refused.value.message
    assert refused.value.hint and "retention pin" in refused.value.hint


# --- a dry run, and a running cycle ----------------------------------------------------------------------------
def test_a_dry_run_removes_nothing(
    tmp_path: Path,
    db_url: str,  # noqa: F811
    engine: Engine,
    history: dict[str, Path],
) -> None:
    settings = settings_for(tmp_path, db_url, **STRICTEST)
    before = every_file(settings.data_dir)
    report = prune(settings=settings, engine=engine, actor="host:ops", source="cli", dry_run=True)
    assert report.dry_run and len(report.plan.items) >= 8  # four adapters and four run folders would go
    assert report.removed == [] and report.freed_bytes == 0
    assert every_file(settings.data_dir) == before
    assert all(row.pruned_at is None for row in versions(engine).values())
    assert [e for e in audit_events(engine) if e.action == "retention.prune"] == []


def test_refused_while_a_cycle_holds_the_lock(
    tmp_path: Path,
    db_url: str,  # noqa: F811
    engine: Engine,
    history: dict[str, Path],
) -> None:
    settings = settings_for(tmp_path, db_url, **STRICTEST)
    with session_scope(engine) as session:
        assert lock_repo.try_acquire(session=session, name=CYCLE_LOCK, holder="other:1:cycle", ttl_s=LOCK_TTL_S)
    before = every_file(settings.data_dir)
    with pytest.raises(Conflict) as refused:
        prune(settings=settings, engine=engine, actor="host:ops", source="cli")
    assert "cycle is running" in refused.value.message
    assert every_file(settings.data_dir) == before
    failed = [e for e in audit_events(engine) if e.action == "retention.prune"]
    assert [e.outcome for e in failed] == ["failed"]
    with session_scope(engine) as session:  # the cycle's lock is still the cycle's
        assert lock_repo.current_holder(session=session, name=CYCLE_LOCK, ttl_s=LOCK_TTL_S) == "other:1:cycle"


# --- folders with no record, and logs (SQLite only: no store query differs) -------------------------------------
@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Iterator[tuple[Settings, Engine]]:
    settings = Settings(data_dir=tmp_path / "var", retention=STRICTEST | {"keep_log_bytes": 1_000_000})  # type: ignore[arg-type]
    migrate(settings.store_url)
    engine = make_engine(settings.store_url)
    yield settings, engine
    engine.dispose()


def test_old_folders_no_record_names_go_and_young_ones_stay(sqlite_settings: tuple[Settings, Engine]) -> None:
    settings, engine = sqlite_settings
    settings.retention.keep_days = 7
    old_adapter, young_adapter = settings.adapters_dir / "v0009", settings.adapters_dir / "v0010"
    old_run, young_run = settings.runs_dir / "run-0041", settings.runs_dir / "run-0042"
    for folder in (old_adapter, young_adapter, old_run, young_run):
        folder.mkdir(parents=True)
        (folder / "file").write_bytes(b"x" * 100)
    ten_days_ago = (utcnow() - timedelta(days=10)).timestamp()
    for folder in (old_adapter, old_run):
        os.utime(folder, (ten_days_ago, ten_days_ago))
    outside = settings.data_dir / "models"
    outside.mkdir(parents=True)
    (settings.adapters_dir / "elsewhere").symlink_to(outside)
    prune(settings=settings, engine=engine, actor="host:ops", source="cli")
    assert not old_adapter.exists() and not old_run.exists()
    assert young_adapter.exists() and young_run.exists()
    assert outside.is_dir(), "a link out of the adapters folder was followed"


def test_logs_over_the_limit_lose_their_oldest_parts(sqlite_settings: tuple[Settings, Engine]) -> None:
    settings, engine = sqlite_settings
    logs = settings.logs_dir
    logs.mkdir(parents=True)
    rotated = logs / "vllm.log.1"
    rotated.write_bytes(b"old line\n" * 100_000)  # 900 kB
    live = logs / "vllm.log"
    lines = [f"line {i:07d}\n".encode() for i in range(150_000)]  # 1.8 MB
    live.write_bytes(b"".join(lines))
    with live.open("ab") as held:  # vLLM holds its log open in append mode
        report = prune(settings=settings, engine=engine, actor="host:ops", source="cli")
        held.write(b"after the cut\n")
    assert {(Path(i.path).name, i.action) for i in report.removed} == {
        ("vllm.log.1", "delete"),
        ("vllm.log", "truncate"),
    }
    assert live.read_bytes() == b"after the cut\n"
    tail = rotated.read_bytes()
    assert 0 < len(tail) <= settings.retention.keep_log_bytes // 4
    assert tail.endswith(lines[-1]) and tail.startswith(b"line ")  # the newest lines, from a line's start
    assert sum(p.stat().st_size for p in logs.iterdir()) <= settings.retention.keep_log_bytes


def test_logs_under_the_limit_stay(sqlite_settings: tuple[Settings, Engine]) -> None:
    settings, engine = sqlite_settings
    settings.logs_dir.mkdir(parents=True)
    (settings.logs_dir / "vllm.log").write_bytes(b"x\n" * 1000)
    (settings.logs_dir / "vllm.log.1").write_bytes(b"y\n" * 1000)
    assert plan_retention(settings=settings, engine=engine).items == []


# --- the nightly job ---------------------------------------------------------------------------------------------
class RecordingCycle:
    def __init__(self, calls: list[str], *, fails: bool = False) -> None:
        self.calls, self.fails = calls, fails

    async def run_nightly(self) -> int | None:
        self.calls.append("cycle")
        if self.fails:
            raise RuntimeError("the cycle broke")
        return None


@pytest.mark.parametrize("cycle_fails", [False, True])
async def test_the_nightly_job_prunes_after_its_cycle(cycle_fails: bool) -> None:
    calls: list[str] = []

    async def retention() -> None:
        calls.append("retention")

    scheduler = build_scheduler(
        cycle=RecordingCycle(calls, fails=cycle_fails),  # type: ignore[arg-type]
        crontab="0 2 * * *",
        after_cycle=retention,
    )
    job = scheduler.get_job(NIGHTLY_JOB_ID)
    if cycle_fails:
        with pytest.raises(RuntimeError):
            await job.func()
    else:
        await job.func()
    assert calls == ["cycle", "retention"]


def test_nightly_pruning_is_the_cycles_own_action_and_can_be_turned_off(
    sqlite_settings: tuple[Settings, Engine],
) -> None:
    settings, engine = sqlite_settings
    old_run = settings.runs_dir / "run-0001"
    old_run.mkdir(parents=True)
    settings.retention.nightly = False
    assert prune_after_nightly(settings=settings, engine=engine) is None
    assert old_run.exists()
    settings.retention.nightly = True
    report = prune_after_nightly(settings=settings, engine=engine)
    assert report is not None and not old_run.exists()
    (event,) = [e for e in audit_events(engine) if e.action == "retention.prune"]
    assert (event.actor, event.source) == ("tuneloop", "cycle")


# --- the command -------------------------------------------------------------------------------------------------
def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout


def test_the_command_shows_runs_and_pins(
    tmp_path: Path,
    db_url: str,  # noqa: F811
    engine: Engine,
    history: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_for(tmp_path, db_url)
    monkeypatch.setenv("TUNELOOP_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TUNELOOP_STORE__URL", db_url)
    for key, value in STRICTEST.items():
        monkeypatch.setenv(f"TUNELOOP_RETENTION__{key.upper()}", str(value))

    code, out = cli("retention", "pin", "v0001", "--json")
    assert code == 0 and json.loads(out) == {"version": "v0001", "pinned": True}
    code, out = cli("retention", "pin", "v9999", "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "not_found"

    code, out = cli("retention", "show", "--json")
    assert code == 0
    shown = json.loads(out)
    assert {i["version"] for i in shown["items"] if i["kind"] == "adapter"} == {"v0002", "v0003", "v0005"}
    assert shown["bytes"] == sum(i["bytes"] for i in shown["items"]) > 0
    assert history["v0002"].exists()  # showing removes nothing

    code, out = cli("retention", "run", "--json")
    assert code == 0
    ran = json.loads(out)
    assert ran["dry_run"] is False and ran["freed_bytes"] == shown["bytes"]
    assert not history["v0002"].exists() and history["v0001"].exists()

    code, out = cli("retention", "show")
    assert code == 0 and "nothing to prune" in out and "pinned" in out
    actions = [(e.action, e.source, e.outcome) for e in audit_events(engine)]
    assert actions == [("adapter.pin", "cli", "ok"), ("retention.prune", "cli", "ok")]
    assert all(e.actor.startswith("host:") for e in audit_events(engine))
