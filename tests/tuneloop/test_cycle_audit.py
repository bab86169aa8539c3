"""The cycle's own decisions are audited and announced: an automatic promotion, a rejection, a failure.

No vLLM and no training here: paraphrasing is a no-op, the trainer is a stand-in that writes an adapter's
files, the gate is a stand-in with a fixed verdict, and the model server is an httpx MockTransport that
accepts every adapter load. The store is real SQLite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from serving.client import InferenceClient
from serving.notify import AdminEvent, AdminEventKind, AdminEvents
from serving.registry import AdapterRegistry
from store import adapters as adapter_repo
from store import audit as audit_repo
from store import feedback as feedback_repo
from store import interactions as interaction_repo
from store import runs as run_repo
from store.audit import AuditEntry
from store.db import make_engine, migrate, session_scope
from store.models import AdapterStatus, AuditEvent, RunStatus, TrainingRun
from tests.accepting_engine import AcceptingEngine
from tests.conftest import make_settings
from training.datasets import Datasets
from training.gate import GateReport
from training.trainer import TrainSpec
from tuneloop.cycle import TuningCycle

ADMIN = "U_ADMIN"
SCORES = {"candidate": {"facts": 0.31, "regression": 0.70}, "active": {"facts": 0.20, "regression": 0.80}}


class Recorder:
    def __init__(self) -> None:
        self.events: list[AdminEvent] = []

    async def notify(self, event: AdminEvent) -> None:
        self.events.append(event)


@dataclass
class Cycle:
    tuning: TuningCycle
    events: AdminEvents
    recorder: Recorder
    verdict: dict[str, Any]  # what the stand-in gate decides: {"promote": bool, "reason": str}

    async def run(self) -> TrainingRun:
        run_id = await self.tuning.start(trigger="api", user_id=ADMIN, force=True)
        await self.tuning.wait()
        await self.events.wait_idle()
        with session_scope(self.tuning._engine) as session:
            run = run_repo.get_run(session=session, run_id=run_id)
        assert run is not None
        return run

    def audit(self) -> list[AuditEvent]:
        with session_scope(self.tuning._engine) as session:
            return list(reversed(audit_repo.list_audit(session=session)))


@pytest.fixture
async def cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cycle]:
    settings = make_settings(tmp_path, base_model_dir=tmp_path / "model", vllm_url="http://vllm.test")
    migrate(settings.store_url)
    engine = make_engine(settings.store_url)
    client = InferenceClient(settings.vllm_base_url, transport=httpx.MockTransport(AcceptingEngine()))
    registry = AdapterRegistry(client=client, engine=engine, base_model_name="tuneloop-base")
    events, recorder = AdminEvents(), Recorder()
    events.attach(recorder)
    tuning = TuningCycle(settings=settings, engine=engine, client=client, registry=registry, events=events)
    verdict: dict[str, Any] = {"promote": False, "reason": "regression fell 0.10 (tolerance 0.05)"}

    async def no_paraphrases(datasets: Datasets, *, on_progress: Any) -> None:
        return None

    async def stand_in_trainer(spec: TrainSpec, **kwargs: Any) -> dict[str, Any]:
        folder = Path(spec.output_dir)
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
        (folder / "adapter_model.safetensors").write_bytes(b"")
        return {"sft": {"train_loss": 0.42}}

    async def stand_in_gate(*args: Any, **kwargs: Any) -> GateReport:
        return GateReport(
            candidate=SCORES["candidate"],
            active=SCORES["active"],
            items={"facts": 1, "regression": 1},
            promote=verdict["promote"],
            reason=verdict["reason"],
        )

    monkeypatch.setattr(tuning, "_augment", no_paraphrases)
    monkeypatch.setattr("tuneloop.cycle.train_in_subprocess", stand_in_trainer)
    monkeypatch.setattr("tuneloop.cycle.run_gate", stand_in_gate)
    with session_scope(engine) as session:
        interaction = interaction_repo.create_interaction(session=session, user_id="U1", source="t", question="Q?")
        assert interaction.id is not None
        interaction_repo.record_answer(
            session=session, interaction_id=interaction.id, answer="No idea.", adapter_version="base", latency_ms=1
        )
        feedback_repo.create_correction(
            session=session, interaction_id=interaction.id, author_id="U_R", text="The fact.", approved=True
        )
    yield Cycle(tuning=tuning, events=events, recorder=recorder, verdict=verdict)
    await registry.wait_idle()
    await client.aclose()
    engine.dispose()


def cycle_detail(run: TrainingRun, **extra: Any) -> dict[str, Any]:
    return {"run_id": run.id, "trigger": "api", "triggered_by": ADMIN, **extra}


async def test_a_rejection_is_audited_with_the_rejected_version_and_announced(cycle: Cycle) -> None:
    run = await cycle.run()
    assert run.status == RunStatus.rejected

    [reject] = cycle.audit()  # started here without an admin action: the cycle's decision is the only event
    assert (reject.actor, reject.source, reject.action, reject.target, reject.outcome) == (
        "tuneloop",
        "cycle",
        "reject",
        "v0001",
        "ok",
    )
    assert reject.detail == cycle_detail(run, reason=cycle.verdict["reason"], kept="base")
    with session_scope(cycle.tuning._engine) as session:
        version = adapter_repo.get_version(session=session, version="v0001")
    assert version is not None and version.status == AdapterStatus.rejected

    [event] = cycle.recorder.events
    assert (event.kind, event.version, event.previous, event.run_id, event.triggered_by) == (
        AdminEventKind.rejected,
        "v0001",
        "base",
        run.id,
        ADMIN,
    )
    assert event.metrics["gate"]["candidate"] == SCORES["candidate"]
    assert event.metrics["training"] == {"sft": {"train_loss": 0.42}}


async def test_an_automatic_promotion_is_audited_in_the_commit_that_makes_it_active(cycle: Cycle) -> None:
    cycle.verdict.update(promote=True, reason="facts +0.11, regression -0.10")
    run = await cycle.run()
    assert run.status == RunStatus.succeeded
    assert cycle.tuning._registry.active.version == "v0001"

    promote = cycle.audit()[-1]
    assert (promote.actor, promote.source, promote.action, promote.target, promote.outcome) == (
        "tuneloop",
        "cycle",
        "promote",
        "v0001",
        "ok",
    )
    assert promote.detail == cycle_detail(run, gate=cycle.verdict["reason"], active="v0001", previous="base")
    [event] = cycle.recorder.events
    assert (event.kind, event.actor, event.version, event.previous) == (
        AdminEventKind.promoted,
        "tuneloop",
        "v0001",
        "base",
    )


async def test_a_failed_cycle_is_audited_with_its_cause_and_announced(
    cycle: Cycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_trainer(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise OSError("the trainer was killed")

    monkeypatch.setattr("tuneloop.cycle.train_in_subprocess", broken_trainer)
    run = await cycle.run()
    assert run.status == RunStatus.failed
    assert run.error == "OSError: the trainer was killed"

    failed = cycle.audit()[-1]
    assert (failed.actor, failed.source, failed.action, failed.target, failed.outcome) == (
        "tuneloop",
        "cycle",
        "cycle_failed",
        None,
        "failed",
    )
    assert failed.detail == cycle_detail(run, error=run.error)
    [event] = cycle.recorder.events
    assert (event.kind, event.run_id, event.reason) == (AdminEventKind.cycle_failed, run.id, run.error)


async def test_a_skipped_cycle_writes_no_audit_event_of_its_own(cycle: Cycle) -> None:
    with cycle.tuning._engine.begin() as connection:
        connection.execute(text("DELETE FROM correction"))  # nothing left to train on
    run = await cycle.run()
    assert run.status == RunStatus.skipped
    assert cycle.audit() == []
    assert cycle.recorder.events == []


async def test_runs_interrupted_by_a_stopped_service_are_audited_as_failed(cycle: Cycle) -> None:
    with session_scope(cycle.tuning._engine) as session:
        run = run_repo.create_run(session=session, trigger="nightly", triggered_by=None)
        assert run.id is not None
        run_repo.update_run(session=session, run_id=run.id, status=RunStatus.running)
    cycle.tuning.fail_interrupted_runs()
    [failed] = cycle.audit()
    assert (failed.action, failed.outcome, failed.detail["run_id"], failed.detail["trigger"]) == (
        "cycle_failed",
        "failed",
        run.id,
        "nightly",
    )
    assert "interrupted" in failed.detail["error"]


async def test_the_retrain_audit_event_is_stored_with_the_run_or_not_at_all(cycle: Cycle) -> None:
    engine = cycle.tuning._engine
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TRIGGER refuse_retrain BEFORE INSERT ON auditevent WHEN NEW.action = 'retrain' "
                "BEGIN SELECT RAISE(ABORT, 'audit log refuses retrain'); END"
            )
        )
    entry = AuditEntry(actor=ADMIN, source="api", action="retrain")
    with pytest.raises(Exception, match="audit log refuses retrain"):
        await cycle.tuning.start(trigger="api", user_id=ADMIN, force=True, audit=entry)
    with session_scope(engine) as session:
        assert run_repo.list_runs(session=session) == []

    # Neither lock stayed taken: the next cycle starts at once.
    with engine.begin() as connection:
        connection.execute(text("DROP TRIGGER refuse_retrain"))
    run_id = await cycle.tuning.start(trigger="api", user_id=ADMIN, force=True, audit=entry)
    await cycle.tuning.wait()
    retrain = cycle.audit()[0]
    assert (retrain.action, retrain.detail) == ("retrain", {"run_id": run_id})
