"""The nightly job: a cron trigger from settings, one cycle at a time, only when there is new feedback.

No vLLM here: the cycle's engine URL points at a port with nothing listening, and no test reaches training.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger
from sqlmodel import select

from serving.client import InferenceClient
from serving.errors import Conflict
from serving.registry import AdapterRegistry
from store import adapters as adapter_repo
from store import feedback as feedback_repo
from store import interactions as interaction_repo
from store import runs as run_repo
from store.db import make_engine, migrate, session_scope
from store.models import Feedback, RunStatus
from tests.conftest import free_port, make_settings, record_succeeded_run
from tuneloop.cycle import TuningCycle
from tuneloop.scheduler import NIGHTLY_JOB_ID, build_scheduler


@pytest.fixture
async def cycle(tmp_path: Path) -> AsyncIterator[TuningCycle]:
    settings = make_settings(tmp_path, base_model_dir=tmp_path / "model", vllm_url=f"http://127.0.0.1:{free_port()}")
    migrate(settings.store_url)
    engine = make_engine(settings.store_url)
    client = InferenceClient(settings.vllm_base_url)
    registry = AdapterRegistry(client=client, engine=engine, base_model_name="tuneloop-base")
    yield TuningCycle(settings=settings, engine=engine, client=client, registry=registry)
    await client.aclose()
    engine.dispose()


def runs(cycle: TuningCycle) -> list[str]:
    with session_scope(cycle._engine) as session:
        return [run.status for run in run_repo.list_runs(session=session)]


def add_vote(cycle: TuningCycle) -> None:
    with session_scope(cycle._engine) as session:
        interaction = interaction_repo.create_interaction(session=session, user_id="U1", source="t", question="Q?")
        assert interaction.id is not None
        interaction_repo.record_answer(
            session=session, interaction_id=interaction.id, answer="A.", adapter_version="base", latency_ms=1
        )
        feedback_repo.record_vote(session=session, interaction_id=interaction.id, user_id="U2", vote=-1)


async def test_the_job_uses_the_configured_cron_and_never_overlaps(cycle: TuningCycle) -> None:
    scheduler = build_scheduler(cycle=cycle, crontab="30 3 * * 1-5")
    job = scheduler.get_job(NIGHTLY_JOB_ID)
    assert isinstance(job.trigger, CronTrigger)
    fields = {f.name: str(f) for f in job.trigger.fields}
    assert (fields["hour"], fields["minute"], fields["day_of_week"]) == ("3", "30", "1-5")
    assert job.max_instances == 1
    assert job.coalesce is True


async def test_no_new_feedback_means_no_cycle(cycle: TuningCycle) -> None:
    assert await cycle.run_nightly() is None
    assert runs(cycle) == []


async def test_new_feedback_starts_a_cycle(cycle: TuningCycle) -> None:
    add_vote(cycle)  # a down-vote alone teaches nothing: the cycle runs and is skipped, with the reason
    run_id = await cycle.run_nightly()
    assert run_id is not None
    with session_scope(cycle._engine) as session:
        run = run_repo.get_run(session=session, run_id=run_id)
    assert run is not None
    assert run.trigger == "nightly"
    assert run.status == RunStatus.skipped
    assert run.error and "nothing to train" in run.error


async def test_feedback_older_than_the_last_trained_run_does_not_count(cycle: TuningCycle) -> None:
    add_vote(cycle)
    with session_scope(cycle._engine) as session:
        for vote in session.exec(select(Feedback)).all():
            vote.updated_at = datetime.now(UTC) - timedelta(days=1)
            session.add(vote)
        session.commit()
        record_succeeded_run(session)
    assert await cycle.run_nightly() is None
    assert runs(cycle) == ["succeeded"]


async def test_only_one_cycle_at_a_time(cycle: TuningCycle) -> None:
    first = await cycle.start(trigger="api", user_id="U_ADMIN", force=True)
    with pytest.raises(Conflict) as refused:
        await cycle.start(trigger="api", user_id="U_ADMIN", force=True)
    assert f"run {first}" in refused.value.message
    add_vote(cycle)
    assert await cycle.run_nightly() is None  # the nightly job stands aside while a cycle runs
    await cycle.wait()
    assert runs(cycle) == ["skipped"]
    second = await cycle.start(trigger="api", user_id="U_ADMIN", force=True)  # free again afterwards
    await cycle.wait()
    assert second == first + 1


async def test_runs_left_unfinished_by_a_stopped_service_are_marked_failed(cycle: TuningCycle) -> None:
    with session_scope(cycle._engine) as session:
        run = run_repo.create_run(session=session, trigger="api", triggered_by="U_ADMIN")
        assert run.id is not None
        run_repo.update_run(session=session, run_id=run.id, status=RunStatus.running, stage="training")
    cycle.fail_interrupted_runs()
    with session_scope(cycle._engine) as session:
        stored = run_repo.get_run(session=session, run_id=run.id)
    assert stored is not None
    assert stored.status == RunStatus.failed
    assert stored.error and "interrupted" in stored.error


async def test_two_services_on_one_database_never_run_cycles_at_once(cycle: TuningCycle) -> None:
    # A second TuningCycle is what a second service process has: its own asyncio lock, the same database.
    other = TuningCycle(settings=cycle._settings, engine=cycle._engine, client=cycle._client, registry=cycle._registry)
    first = await cycle.start(trigger="api", user_id="U_ADMIN", force=True)
    with pytest.raises(Conflict) as refused:
        await other.start(trigger="api", user_id="U_ADMIN", force=True)
    assert f"run {first}" in refused.value.message
    other.fail_interrupted_runs()  # a starting service must not fail the other service's running cycle
    await cycle.wait()
    assert runs(cycle) == ["skipped"]
    await other.start(trigger="api", user_id="U_ADMIN", force=True)
    await other.wait()
    assert runs(cycle) == ["skipped", "skipped"]


async def test_continue_strategy_skips_when_nothing_is_newer_than_the_active_adapter(
    cycle: TuningCycle, tmp_path: Path
) -> None:
    cycle._settings.training.strategy = "continue"
    with session_scope(cycle._engine) as session:
        interaction = interaction_repo.create_interaction(session=session, user_id="U1", source="t", question="Q?")
        assert interaction.id is not None
        interaction_repo.record_answer(
            session=session, interaction_id=interaction.id, answer="A.", adapter_version="base", latency_ms=1
        )
        feedback_repo.create_correction(
            session=session, interaction_id=interaction.id, author_id="U_REVIEWER", text="B.", approved=True
        )
        # The active adapter was trained after that correction: it already knows it.
        adapter_repo.register_version(session=session, version="v0001", path=str(tmp_path / "v0001"), run_id=None)
        adapter_repo.mark_active(session=session, version="v0001")
    run_id = await cycle.start(trigger="api", user_id="U_ADMIN", force=True)
    await cycle.wait()
    with session_scope(cycle._engine) as session:
        run = run_repo.get_run(session=session, run_id=run_id)
    assert run is not None
    assert run.status == RunStatus.skipped
    assert run.error and "nothing new to continue" in run.error
