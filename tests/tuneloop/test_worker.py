"""Training beside the API or not: a service that queues (`training.runner=worker`) and `tuneloop worker`.

No vLLM and no training here: the engine URL points at a port with nothing listening (or at one that never
answers), and the runs a worker claims have nothing to train on, so they end `skipped`. The store is a real
SQLite file, and the race between workers also runs on the real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from serving.client import InferenceClient
from serving.errors import Conflict
from serving.registry import AdapterRegistry
from store import adapters as adapter_repo
from store import audit as audit_repo
from store import locks as lock_repo
from store import runs as run_repo
from store.audit import AuditEntry
from store.db import make_engine, migrate, session_scope
from store.models import Lock, RunStatus, TrainingRun, utcnow
from tests.conftest import free_port, make_settings
from tests.store.conftest import _postgres_database, _postgres_probe  # noqa: F401 (fixture re-exported)
from tuneloop.cycle import CYCLE_LOCK, LOCK_TTL_S, TuningCycle
from tuneloop.settings import Settings

ADMIN = "U_ADMIN"
# Long enough for a worker's whole claim (lock, read, a skipped run) on a busy 2-core machine.
DEADLINE_S = 60.0


def queueing_settings(
    tmp_path: Path, *, runner: str = "worker", store_url: str | None = None, **serving: object
) -> Settings:
    overrides: dict[str, object] = {"training": {"runner": runner}}
    if store_url is not None:
        overrides["store"] = {"url": store_url}
    settings = make_settings(
        tmp_path,
        base_model_dir=tmp_path / "model",
        vllm_url=f"http://127.0.0.1:{free_port()}",
        **overrides,
    )
    for name, value in serving.items():
        setattr(settings.serving, name, value)
    return settings


def build_cycle(settings: Settings) -> TuningCycle:
    """What one process has: its own store engine, client, registry and cycle, on the shared database."""
    engine = make_engine(settings.store_url)
    client = InferenceClient(settings.vllm_base_url, timeout_s=settings.serving.request_timeout_s)
    registry = AdapterRegistry(client=client, engine=engine, base_model_name="tuneloop-base")
    return TuningCycle(settings=settings, engine=engine, client=client, registry=registry)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[TuningCycle]:
    """A service's cycle with `training.runner=worker`: it queues."""
    settings = queueing_settings(tmp_path)
    migrate(settings.store_url)
    cycle = build_cycle(settings)
    yield cycle
    await cycle._client.aclose()
    cycle._engine.dispose()


def stored_runs(cycle: TuningCycle) -> list[TrainingRun]:
    with session_scope(cycle._engine) as session:
        return list(reversed(run_repo.list_runs(session=session)))


def lock_holder(cycle: TuningCycle) -> str | None:
    with session_scope(cycle._engine) as session:
        return lock_repo.current_holder(session=session, name=CYCLE_LOCK, ttl_s=LOCK_TTL_S)


def add_run(cycle: TuningCycle, status: RunStatus) -> int:
    with session_scope(cycle._engine) as session:
        run = run_repo.create_run(session=session, trigger="api", triggered_by=ADMIN)
        assert run.id is not None
        if status != RunStatus.queued:
            run_repo.update_run(session=session, run_id=run.id, status=status, stage="training")
        return run.id


async def test_a_queueing_service_creates_a_queued_run_and_trains_nothing(service: TuningCycle) -> None:
    entry = AuditEntry(actor=ADMIN, source="api", action="retrain")
    run_id = await service.start(trigger="api", user_id=ADMIN, force=True, audit=entry)
    await service.wait()  # nothing runs here: returns at once
    [run] = stored_runs(service)
    assert (run.id, run.status, run.stage, run.started_at) == (run_id, RunStatus.queued, None, None)
    assert not service.running
    assert lock_holder(service) is None  # left for the worker to take
    assert not service._settings.runs_dir.exists()  # no run folder, no dataset, no training
    with session_scope(service._engine) as session:
        [event] = [e for e in audit_repo.list_audit(session=session) if e.action == "retrain"]
    assert event.actor == ADMIN and event.detail["run_id"] == run_id


async def test_a_second_retrain_is_refused_while_one_is_queued_or_running(service: TuningCycle) -> None:
    first = await service.start(trigger="api", user_id=ADMIN, force=True)
    with pytest.raises(Conflict) as refused:
        await service.start(trigger="slack", user_id=ADMIN, force=True)
    assert f"already queued (run {first})" in refused.value.message
    # Another service process on the database refuses it too.
    other = TuningCycle(
        settings=service._settings, engine=service._engine, client=service._client, registry=service._registry
    )
    with pytest.raises(Conflict):
        await other.start(trigger="api", user_id=ADMIN, force=True)
    assert await service.run_nightly() is None  # the nightly job stands aside as well
    # A worker holds the lock while it trains: refused, and the message says it runs.
    with session_scope(service._engine) as session:
        run_repo.update_run(session=session, run_id=first, status=RunStatus.running)
        assert lock_repo.try_acquire(session=session, name=CYCLE_LOCK, holder="gpu-node:1:abc", ttl_s=LOCK_TTL_S)
    with pytest.raises(Conflict) as refused:
        await service.start(trigger="api", user_id=ADMIN, force=True)
    assert f"already running (run {first})" in refused.value.message
    assert [run.id for run in stored_runs(service)] == [first]


async def test_a_queueing_service_leaves_queued_runs_to_the_worker_at_start(service: TuningCycle) -> None:
    running = add_run(service, RunStatus.running)  # its holder is gone: no lock row
    queued = add_run(service, RunStatus.queued)
    service.fail_interrupted_runs()
    status = {run.id: (run.status, run.error) for run in stored_runs(service)}
    assert status[queued] == (RunStatus.queued, None)
    assert status[running][0] == RunStatus.failed and "interrupted" in (status[running][1] or "")


async def test_a_training_service_still_fails_every_unfinished_run_at_start(tmp_path: Path) -> None:
    settings = queueing_settings(tmp_path, runner="local")
    migrate(settings.store_url)
    cycle = build_cycle(settings)
    queued = add_run(cycle, RunStatus.queued)
    cycle.fail_interrupted_runs()
    [run] = stored_runs(cycle)
    assert (run.id, run.status) == (queued, RunStatus.failed)
    await cycle._client.aclose()
    cycle._engine.dispose()


async def test_a_worker_claims_the_oldest_queued_run_and_runs_the_cycle(service: TuningCycle, tmp_path: Path) -> None:
    run_id = await service.start(trigger="api", user_id=ADMIN, force=True)
    # The worker: its own process, its own data dir (and so its own settings), the same database.
    worker_settings = queueing_settings(tmp_path / "worker", runner="local", store_url=service._settings.store_url)
    worker = build_cycle(worker_settings)
    claimed: list[int] = []
    assert await worker.run_next_queued(on_claimed=claimed.append) == run_id
    assert claimed == [run_id]
    [run] = stored_runs(service)
    # The cycle ran to its end: nothing approved to train on, so it is skipped with the reason.
    assert run.status == RunStatus.skipped and run.started_at is not None
    assert run.error and "nothing to train on" in run.error
    assert lock_holder(service) is None and not worker.running
    assert await worker.run_next_queued() is None  # nothing waits any more
    await worker._client.aclose()
    worker._engine.dispose()


async def test_a_worker_takes_nothing_while_another_process_holds_the_lock(service: TuningCycle) -> None:
    run_id = await service.start(trigger="api", user_id=ADMIN, force=True)
    with session_scope(service._engine) as session:  # retention pruning, or another worker, holds it
        assert lock_repo.try_acquire(session=session, name=CYCLE_LOCK, holder="other:1:abc", ttl_s=LOCK_TTL_S)
    worker = TuningCycle(
        settings=service._settings, engine=service._engine, client=service._client, registry=service._registry
    )
    assert await worker.run_next_queued() is None
    [run] = stored_runs(service)
    assert (run.id, run.status) == (run_id, RunStatus.queued)
    assert lock_holder(service) == "other:1:abc"


async def test_a_run_whose_worker_died_is_failed_by_the_next_worker_that_takes_the_lock(service: TuningCycle) -> None:
    dead = add_run(service, RunStatus.running)
    with session_scope(service._engine) as session:  # the dead worker's lock: no heartbeat for longer than its TTL
        stale = utcnow() - timedelta(seconds=LOCK_TTL_S + 5)
        session.add(Lock(name=CYCLE_LOCK, holder="gpu-node:99:dead", acquired_at=stale, heartbeat_at=stale))
        session.commit()
    service.fail_interrupted_runs()  # a service starting now: nobody holds the lock any more, the run is failed
    assert [(run.id, run.status) for run in stored_runs(service)] == [(dead, RunStatus.failed)]
    # The same when the service had not restarted: the next worker fails it before it claims the queued run.
    orphan = add_run(service, RunStatus.running)
    queued = add_run(service, RunStatus.queued)
    worker = TuningCycle(
        settings=service._settings, engine=service._engine, client=service._client, registry=service._registry
    )
    assert await worker.run_next_queued() == queued
    status = {run.id: (run.status, run.error or "") for run in stored_runs(service)}
    assert status[orphan][0] == RunStatus.failed and "interrupted" in status[orphan][1]
    assert status[queued][0] == RunStatus.skipped


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: a request to it hangs until cancelled."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield int(server.getsockname()[1])
    server.close()


async def test_a_worker_stopped_mid_run_fails_the_run_and_gives_the_lock_back(tmp_path: Path, silent_port: int) -> None:
    settings = queueing_settings(tmp_path, vllm_url=f"http://127.0.0.1:{silent_port}")
    migrate(settings.store_url)
    cycle = build_cycle(settings)
    folder = tmp_path / "v0001"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    with session_scope(cycle._engine) as session:  # the worker loads the active version first: vLLM never answers
        adapter_repo.register_version(session=session, version="v0001", path=str(folder), run_id=None)
        adapter_repo.mark_active(session=session, version="v0001")
    run_id = await cycle.start(trigger="api", user_id=ADMIN, force=True)
    worker = build_cycle(settings)
    claimed = asyncio.Event()
    task = asyncio.create_task(worker.run_next_queued(on_claimed=lambda _run: claimed.set()))
    await asyncio.wait_for(claimed.wait(), timeout=DEADLINE_S)
    assert lock_holder(cycle) is not None
    task.cancel()  # what SIGTERM does to `tuneloop worker` mid-run
    with pytest.raises(asyncio.CancelledError):
        await task
    [run] = stored_runs(cycle)
    assert (run.id, run.status) == (run_id, RunStatus.failed)
    assert run.error and "interrupted" in run.error
    assert lock_holder(cycle) is None and not worker.running
    assert await cycle.start(trigger="api", user_id=ADMIN, force=True) == run_id + 1  # the next one queues
    for each in (cycle, worker):
        await each._client.aclose()
        each._engine.dispose()


# --- two workers race for one queued run ------------------------------------------------------------------------
@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    yield from _postgres_database(request.getfixturevalue("_postgres_probe"))


WORKERS = 4


def test_only_one_of_several_racing_workers_claims_a_queued_run(tmp_path: Path, store_url: str) -> None:
    migrate(store_url)
    settings = queueing_settings(tmp_path, store_url=store_url)
    service = build_cycle(settings)
    run_id = asyncio.run(service.start(trigger="api", user_id=ADMIN, force=True))
    claims: list[int | None] = []
    errors: list[BaseException] = []
    ready = threading.Barrier(WORKERS)

    def worker(number: int) -> None:
        # Each thread is one worker process: its own event loop, store engine (connections), client and cycle.
        cycle = build_cycle(queueing_settings(tmp_path / f"worker-{number}", store_url=store_url))

        async def claim() -> int | None:
            try:
                await asyncio.to_thread(cycle._oldest_queued)  # connected before the start: the claims overlap
                ready.wait(timeout=DEADLINE_S)  # all start claiming together
                return await cycle.run_next_queued()
            finally:
                await cycle._client.aclose()

        try:
            claims.append(asyncio.run(claim()))
        except BaseException as error:
            errors.append(error)
        finally:
            cycle._engine.dispose()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE_S)
    assert not any(thread.is_alive() for thread in threads), "a worker did not finish"
    assert errors == []
    assert sorted(claims, key=lambda c: c is None) == [run_id] + [None] * (WORKERS - 1)
    [run] = stored_runs(service)
    assert run.status == RunStatus.skipped  # run once, by one worker
    service._engine.dispose()


def test_retention_prunes_the_shared_folder_and_keeps_the_active_version(tmp_path: Path) -> None:
    from tuneloop.retention import prune

    settings = Settings(
        data_dir=tmp_path / "var",
        storage={"shared_dir": tmp_path / "shared"},  # type: ignore[arg-type]
        retention={"keep_days": 0, "keep_runs": 0, "keep_rejected": 0, "keep_superseded": 0},  # type: ignore[arg-type]
    )
    assert settings.adapters_dir == tmp_path / "shared" / "adapters"
    assert settings.runs_dir == tmp_path / "shared" / "runs"
    migrate(settings.store_url)
    engine = make_engine(settings.store_url)
    folders = {}
    with session_scope(engine) as session:
        adapter_repo.ensure_base_version(session=session)
        for name, status in (("v0001", RunStatus.rejected), ("v0002", RunStatus.succeeded)):
            run = run_repo.create_run(session=session, trigger="api", triggered_by=ADMIN)
            assert run.id is not None
            run_repo.update_run(session=session, run_id=run.id, status=RunStatus.running)
            run_repo.update_run(session=session, run_id=run.id, status=status, adapter_version=name)
            (settings.runs_dir / f"run-{run.id:04d}").mkdir(parents=True)
            folders[name] = settings.adapters_dir / name
            folders[name].mkdir(parents=True)
            (folders[name] / "adapter_config.json").write_text("{}")
            adapter_repo.register_version(session=session, version=name, path=str(folders[name]), run_id=run.id)
        adapter_repo.set_version_status(session=session, version="v0001", status="rejected")
        adapter_repo.mark_active(session=session, version="v0002")
    report = prune(settings=settings, engine=engine, actor="host:test", source="cli")
    assert {item.path for item in report.removed} >= {str(folders["v0001"])}
    assert not folders["v0001"].exists()
    assert (folders["v0002"] / "adapter_config.json").is_file()  # the active version is never pruned
    assert not (tmp_path / "var" / "adapters").exists()
    engine.dispose()


async def test_the_nightly_job_of_a_queueing_service_queues_its_cycle(service: TuningCycle) -> None:
    from store import feedback as feedback_repo
    from store import interactions as interaction_repo

    with session_scope(service._engine) as session:  # new feedback since the last cycle
        interaction = interaction_repo.create_interaction(session=session, user_id="U1", source="t", question="Q?")
        assert interaction.id is not None
        interaction_repo.record_answer(
            session=session, interaction_id=interaction.id, answer="A.", adapter_version="base", latency_ms=1
        )
        feedback_repo.record_vote(session=session, interaction_id=interaction.id, user_id="U2", vote=-1)
    run_id = await service.run_nightly()
    [run] = stored_runs(service)
    assert (run.id, run.trigger, run.status) == (run_id, "nightly", RunStatus.queued)
    assert lock_holder(service) is None
