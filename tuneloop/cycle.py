"""One tuning cycle: datasets -> paraphrases -> training (child process) -> register -> load -> promote.

Every stage writes the run record, so `GET /admin/runs/{id}` shows where a cycle is and why it stopped.
The cycle runs on the service's event loop, so its store work, dataset building, redaction and file
writing run in worker threads (`asyncio.to_thread`): the loop keeps answering Slack and the API meanwhile.

The cycle's own decisions are audited with actor "tuneloop" and source "cycle", whoever started the run:
the gate decided, not the person (their `retrain` is audited under their name, in the commit that creates
the run, and the run's trigger and triggered_by are in each event's detail). `promote` is stored in the
commit that makes the version active, `reject` in the one that marks it rejected, and `cycle_failed` with
the run's failed status. Each is also published to the admin notifiers (the Slack admin channel).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from serving.answers import with_reviewed
from serving.client import InferenceClient
from serving.errors import Conflict, TuneloopError
from serving.memory import ReviewedMemory
from serving.memory_paraphrases import base_model_sampler
from serving.metrics import ServiceMetrics
from serving.notify import AdminEvent, AdminEventKind, AdminEvents
from serving.registry import AdapterRegistry
from store import adapters as adapter_repo
from store import audit as audit_repo
from store import feedback as feedback_repo
from store import locks as lock_repo
from store import runs as run_repo
from store.audit import AuditEntry
from store.db import session_scope
from store.models import AdapterStatus, RunStatus, TrainingRun
from training.anchors import add_anchors
from training.augment import add_paraphrases
from training.curate import CurationPolicy
from training.datasets import (
    DPO_FILENAME,
    SFT_FILENAME,
    Datasets,
    Message,
    build_datasets,
    dataset_sha256,
    dpo_rows,
    redact_datasets,
    sft_rows,
    write_jsonl,
)
from training.gate import EvalItem, GateThresholds, hold_out_groups, hold_out_paraphrases, load_regression_set, run_gate
from training.process import train_in_subprocess
from training.prompts import prompt_messages
from training.redact import Redactor
from training.trainer import TrainSpec, verify_adapter
from tuneloop.run_record import RunRecorder
from tuneloop.settings import Settings
from tuneloop.train_spec import train_spec, trainer_processes

log = logging.getLogger(__name__)
CYCLE_LOCK = "tuning-cycle"
# A holder that has not refreshed the lock for this long is taken for dead.
LOCK_TTL_S = 120.0
# Who the cycle's own promotions, rejections and failures are audited under.
CYCLE_ACTOR = "tuneloop"
CYCLE_SOURCE = "cycle"


@dataclass(frozen=True, kw_only=True)
class PreparedData:
    """What the datasets stage hands to training and the gate."""

    run_dir: Path
    sft_path: Path
    dpo_path: Path | None
    counts: dict[str, Any]
    gate_items: list[EvalItem]
    init_adapter: str | None  # the active adapter trained further (continue, incremental), or None: from the base


@dataclass(frozen=True, kw_only=True)
class TrainedCandidate:
    version: str
    metrics: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Verdict:
    gate: dict[str, Any]
    promote: bool
    reason: str


class TuningCycle:
    """Starts cycles in the background, one at a time (implements serving.admin.CycleLauncher)."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        client: InferenceClient,
        registry: AdapterRegistry,
        events: AdminEvents | None = None,
        memory: ReviewedMemory | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._memory = memory
        # None: counted in a registry of its own that nobody scrapes (tests, scripts).
        self._metrics = metrics if metrics is not None else ServiceMetrics()
        self._engine = engine
        self._client = client
        self._registry = registry
        self._events = events
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        # Progress from synchronous callbacks: the newest value waits while one write is in flight.
        self._progress_writer: asyncio.Task[None] | None = None
        self._latest_progress: tuple[int, dict[str, Any]] | None = None
        # Names this process as the lock's holder; a restarted process is a new holder.
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    @property
    def running(self) -> bool:
        return self._lock.locked()

    @property
    def queues(self) -> bool:
        """True with `training.runner=worker`: `start` only queues a run, and `tuneloop worker` trains it."""
        return self._settings.training.runner == "worker"

    def fail_interrupted_runs(self) -> None:
        """Runs left unfinished by a stopped process can never finish: mark them failed.

        Only when no live process holds the cycle lock: another service (or a worker) may be mid-cycle.
        A queued run waits for `tuneloop worker` when this service queues (`training.runner=worker`).
        """
        with session_scope(self._engine) as session:
            if lock_repo.current_holder(session=session, name=CYCLE_LOCK, ttl_s=LOCK_TTL_S) is not None:
                return
            interrupted = [
                run.id
                for run in run_repo.unfinished_runs(session=session)
                if run.id is not None and (run.status == RunStatus.running or not self.queues)
            ]
        for run_id in interrupted:
            self._fail(run_id, "interrupted: the service stopped while this run was in progress")

    async def start(self, *, trigger: str, user_id: str | None, force: bool, audit: AuditEntry | None = None) -> int:
        """Start a cycle; `audit` (the action that asked for it) is stored in the run's creating commit.

        When this service queues (`training.runner=worker`), the run is created `queued` and left to
        `tuneloop worker`; a run already queued or running is refused here as one running locally is.
        """
        if self._lock.locked():
            raise await asyncio.to_thread(self._busy)
        await self._lock.acquire()
        try:
            # The database lock covers every process on this database; the asyncio lock, this one.
            if not await asyncio.to_thread(self._try_db_lock):
                raise await asyncio.to_thread(self._busy)
            try:
                if self.queues:
                    await self._fail_orphaned_runs()
                run_id = await asyncio.to_thread(self._create_run, trigger=trigger, user_id=user_id, audit=audit)
            except BaseException:
                # Else it would stay taken until its time-to-live runs out.
                await asyncio.to_thread(self._release_db_lock)
                raise
        except BaseException:
            self._lock.release()
            raise
        if self.queues:
            try:
                await asyncio.to_thread(self._release_db_lock)  # the worker takes it when it claims the run
            finally:
                self._lock.release()
            log.info("cycle.queued run=%s trigger=%s", run_id, trigger)
            return run_id
        self._task = asyncio.create_task(self._run_locked(run_id, force=force))
        return run_id

    async def run_next_queued(self, *, on_claimed: Callable[[int], object] | None = None) -> int | None:
        """For `tuneloop worker`: take the cycle lock, claim the oldest queued run and run it to its end.

        None, with nothing changed, when the lock is taken (a cycle runs elsewhere, or retention prunes) or
        no run waits. Under the lock, a run still `running` is an orphan (its holder stopped refreshing the
        lock): it is failed as interrupted first. The force flag is not stored with a run: only a nightly
        run can be skipped for too few new examples, and only nightly runs are unforced.
        """
        if self._lock.locked():
            return None
        await self._lock.acquire()
        try:
            if not await asyncio.to_thread(self._try_db_lock):
                self._lock.release()
                return None
            try:
                await self._fail_orphaned_runs()
                run_id = await asyncio.to_thread(self._oldest_queued)
            except BaseException:
                await asyncio.to_thread(self._release_db_lock)
                raise
            if run_id is None:
                await asyncio.to_thread(self._release_db_lock)
                self._lock.release()
                return None
        except BaseException:
            if self._lock.locked():
                self._lock.release()
            raise
        log.info("cycle.claimed run=%s holder=%s", run_id, self._holder)

        async def before() -> None:
            if on_claimed is not None:
                on_claimed(run_id)
            # A worker follows nothing between runs: it takes the store's active version at the start of each.
            await self._registry.restore()

        await self._run_locked(run_id, force=False, before=before)
        return run_id

    def _oldest_queued(self) -> int | None:
        with session_scope(self._engine) as session:
            queued = [run.id for run in run_repo.unfinished_runs(session=session) if run.status == RunStatus.queued]
        return min((run_id for run_id in queued if run_id is not None), default=None)

    async def _fail_orphaned_runs(self) -> None:
        """With the cycle lock held here: a run still `running` lost its holder (a worker or service that died)."""
        orphans = await asyncio.to_thread(self._running_runs)
        for run_id in orphans:
            cause = "interrupted: the process running it stopped (its cycle lock expired)"
            run = await asyncio.to_thread(self._store_failure, run_id, cause)
            log.warning("cycle.interrupted run=%s", run_id)
            self._publish(AdminEventKind.cycle_failed, run, version=run.adapter_version, reason=cause)

    def _running_runs(self) -> list[int]:
        with session_scope(self._engine) as session:
            return [
                run.id
                for run in run_repo.unfinished_runs(session=session)
                if run.status == RunStatus.running and run.id is not None
            ]

    def _create_run(self, *, trigger: str, user_id: str | None, audit: AuditEntry | None) -> int:
        # Not run_repo.create_run, which commits at once: the run and its audit event are one commit.
        with session_scope(self._engine) as session:
            if self.queues and run_repo.unfinished_runs(session=session):
                raise self._busy_in(session)  # one run waits for the worker already
            run = TrainingRun(trigger=trigger, triggered_by=user_id)
            session.add(run)
            session.flush()  # the run's id, for the audit event
            assert run.id is not None
            if audit is not None:
                audit_repo.add_audit(session=session, entry=replace(audit, detail={**audit.detail, "run_id": run.id}))
            session.commit()
            return run.id

    def _try_db_lock(self) -> bool:
        with session_scope(self._engine) as session:
            return lock_repo.try_acquire(session=session, name=CYCLE_LOCK, holder=self._holder, ttl_s=LOCK_TTL_S)

    def _release_db_lock(self) -> None:
        with session_scope(self._engine) as session:
            lock_repo.release(session=session, name=CYCLE_LOCK, holder=self._holder)

    def _busy(self) -> Conflict:
        with session_scope(self._engine) as session:
            return self._busy_in(session)

    def _busy_in(self, session: Session) -> Conflict:
        busy = run_repo.unfinished_runs(session=session)
        state = "queued" if busy and all(run.status == RunStatus.queued for run in busy) else "running"
        return Conflict(
            f"a tuning cycle is already {state} (run {busy[0].id if busy else '?'})",
            hint="Follow it with `tuneloop runs` and try again when it has finished.",
        )

    async def wait(self) -> None:
        """Until the cycle this process started has finished (at once when it only queued one)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def run_nightly(self) -> int | None:
        """The scheduled job: a cycle only when there is new feedback since the last one that trained."""
        new = await asyncio.to_thread(self._new_feedback)
        if new == 0:
            log.info("cycle.nightly_skipped reason=no new feedback since the last run")
            return None
        try:
            run_id = await self.start(trigger="nightly", user_id=None, force=False)
        except Conflict:
            log.info("cycle.nightly_skipped reason=a cycle is already running")
            return None
        await self.wait()
        return run_id

    def _new_feedback(self) -> int:
        with session_scope(self._engine) as session:
            last = run_repo.last_finished_run(session=session)
            return feedback_repo.count_new_feedback(session=session, since=last.started_at if last else None)

    async def export(self) -> dict[str, list[dict[str, Any]]]:
        """The exact rows the next cycle would train on (paraphrases included)."""
        datasets = await self._prepare(on_progress=None)
        prompt = self._settings.serving.system_prompt
        return {"sft": sft_rows(datasets, system_prompt=prompt), "dpo": dpo_rows(datasets, system_prompt=prompt)}

    # --- the cycle -----------------------------------------------------------------------------
    async def _run_locked(
        self, run_id: int, *, force: bool, before: Callable[[], Awaitable[object]] | None = None
    ) -> None:
        heartbeat = asyncio.create_task(self._keep_lock())
        recorder = RunRecorder(self._engine, run_id)
        try:
            if before is not None:
                await before()
            await self._run(recorder, force=force)
        except Exception as error:
            cause = self._cause(error)
            log.exception("cycle.failed run=%s", run_id)
            await recorder.settle()
            run = await asyncio.to_thread(self._store_failure, run_id, cause)
            self._publish(AdminEventKind.cycle_failed, run, version=run.adapter_version, reason=cause)
        except asyncio.CancelledError:
            # A worker stopped mid-run (SIGTERM, Ctrl-C): the run says so before the lock is given back.
            cause = "interrupted: the process running it was stopped"
            log.warning("cycle.cancelled run=%s", run_id)
            await recorder.settle()
            run = await asyncio.to_thread(self._store_failure, run_id, cause)
            self._publish(AdminEventKind.cycle_failed, run, version=run.adapter_version, reason=cause)
            raise
        finally:
            heartbeat.cancel()
            try:
                await asyncio.to_thread(self._release_db_lock)
            finally:
                self._lock.release()
        await asyncio.to_thread(self._count_finished, run_id)

    def _count_finished(self, run_id: int) -> None:
        """The finished run's outcome and stage timings, as its record has them, into the metrics."""
        try:
            run = self._existing_run(run_id)
        except Exception as error:  # the run itself is settled; only its metrics are lost, and the log says so
            log.warning("cycle.metrics_unrecorded run=%s error=%s", run_id, type(error).__name__, exc_info=error)
            return
        self._metrics.cycle_finished(outcome=run.status, timings=run.timings)

    def _fail(self, run_id: int, cause: str) -> None:
        """Mark the run failed and audit it in one commit, then tell the admins (on the loop's thread)."""
        run = self._store_failure(run_id, cause)
        self._publish(AdminEventKind.cycle_failed, run, version=run.adapter_version, reason=cause)

    def _store_failure(self, run_id: int, cause: str) -> TrainingRun:
        with session_scope(self._engine) as session:
            run = _existing_run(session, run_id)
            version = run.adapter_version
            audit_repo.add_audit(
                session=session,
                entry=_cycle_entry(run, action="cycle_failed", target=version, outcome="failed", error=cause),
            )
            # update_run commits the session: the staged audit event is stored with the failed status, or neither.
            return run_repo.update_run(session=session, run_id=run_id, status=RunStatus.failed, error=cause)

    def _cause(self, error: Exception) -> str:
        if isinstance(error, TuneloopError):
            return error.message
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return f"No space left on device: free space under {self._settings.data_dir} and retrain"
        return f"{type(error).__name__}: {error}"

    async def _keep_lock(self) -> None:
        while True:
            await asyncio.sleep(LOCK_TTL_S / 4)  # a heartbeat period, not synchronisation
            if not await asyncio.to_thread(self._refresh_db_lock):
                log.error("cycle.lock_lost holder=%s", self._holder)

    def _refresh_db_lock(self) -> bool:
        with session_scope(self._engine) as session:
            return lock_repo.refresh(session=session, name=CYCLE_LOCK, holder=self._holder)

    async def _run(self, recorder: RunRecorder, *, force: bool) -> None:
        """The cycle's stages in order; each returns what the next needs, or None when the run ends there."""
        await recorder.set(status=RunStatus.running, stage="datasets")
        prepared = await self._prepare_data(recorder, force=force)
        if prepared is None:
            return
        trained = await self._train(recorder, prepared)
        verdict = await self._evaluate(recorder, prepared, trained)
        if verdict.promote:
            await self._promote_candidate(recorder, trained, verdict)
        else:
            await self._reject_candidate(recorder, trained, verdict)

    async def _prepare_data(self, recorder: RunRecorder, *, force: bool) -> PreparedData | None:
        """Datasets from the store, paraphrases, the gate's questions and the files; None: skipped (recorded)."""
        run_id, t = recorder.run_id, self._settings.training
        with recorder.timed("datasets_s"):
            datasets = await asyncio.to_thread(self._build)
            await recorder.set(counts=datasets.counts())
            skipped = await asyncio.to_thread(self._skip_reason, run_id, datasets, force=force)
            if skipped is not None:
                log.info("cycle.skipped run=%s reason=%s", run_id, skipped)
                await recorder.set(status=RunStatus.skipped, stage="datasets", error=skipped)
                return None
            continue_from = await asyncio.to_thread(self._continue_from)
            if continue_from is not None and datasets.new_examples(since=continue_from[1]) == 0:
                await recorder.set(
                    status=RunStatus.skipped,
                    stage="datasets",
                    error=f"nothing new to continue the active adapter with (training.strategy={t.strategy})",
                )
                return None
            await self._augment(datasets, on_progress=recorder.counter())
            gate_items = (
                hold_out_groups(datasets, fraction=t.gate_heldout_groups, seed=t.seed + run_id)
                + hold_out_paraphrases(datasets, per_example=t.gate_heldout_paraphrases)
                + await asyncio.to_thread(load_regression_set)
                if t.gate_enabled
                else []
            )
            # Held out above, cut here: an adapter trained further is still judged on every fact, old ones included.
            replayed = self._keep_what_trains(datasets, continue_from, seed=t.seed + run_id)

        run_dir = self._settings.runs_dir / f"run-{run_id:04d}"
        sft_path, dpo_path = await asyncio.to_thread(self._write_datasets, datasets, run_dir)
        # The files are the exact training data; their hashes in the run record tell two runs' data apart.
        counts = {
            **datasets.counts(),
            # What this run did: the first adapter of an incremental strategy trains from the base model.
            "strategy": t.strategy if continue_from else "from_base",
            "replayed": replayed,
            "dataset_sha256": await asyncio.to_thread(dataset_sha256, [p for p in (sft_path, dpo_path) if p]),
        }
        await recorder.set(counts=counts, timings=recorder.timings)
        return PreparedData(
            run_dir=run_dir,
            sft_path=sft_path,
            dpo_path=dpo_path,
            counts=counts,
            gate_items=gate_items,
            init_adapter=continue_from[0] if continue_from else None,
        )

    def _skip_reason(self, run_id: int, datasets: Datasets, *, force: bool) -> str | None:
        counts = datasets.counts()
        if counts["sft_corrections"] + counts["sft_upvoted"] == 0:
            return "nothing to train on: no approved corrections or up-voted answers yet"
        return self._too_few_new_examples(run_id, datasets, force=force)

    def _keep_what_trains(self, datasets: Datasets, continue_from: tuple[str, datetime] | None, *, seed: int) -> int:
        """Cut the datasets to what the strategy trains on; returns how many older examples are replayed."""
        t = self._settings.training
        if continue_from is None:
            return 0
        since = continue_from[1]
        if t.strategy == "incremental":
            replay = max(t.replay_examples, math.ceil(t.replay_ratio * datasets.new_examples(since=since)))
            return datasets.keep_new_with_replay(since=since, replay=replay, seed=seed)
        datasets.keep_new(since=since)
        return 0

    async def _train(self, recorder: RunRecorder, prepared: PreparedData) -> TrainedCandidate:
        """Train in a child process (one per GPU), check the adapter, register it as a version."""
        version = await asyncio.to_thread(self._next_version_name)
        adapter_dir = self._settings.adapters_dir / version
        spec = self._train_spec(
            sft_path=prepared.sft_path,
            dpo_path=prepared.dpo_path,
            output_dir=adapter_dir,
            init_adapter=prepared.init_adapter,
        )
        await recorder.set(stage="training", progress={})
        with recorder.timed("training_s"):
            metrics = await train_in_subprocess(
                spec,
                processes=await asyncio.to_thread(trainer_processes, self._settings),
                spec_path=prepared.run_dir / "spec.json",
                log_path=prepared.run_dir / "train.log",
                on_event=recorder.trainer_events(),
            )
        await asyncio.to_thread(verify_adapter, adapter_dir)
        await recorder.set(stage="register", metrics=metrics, timings=recorder.timings, progress={})
        await asyncio.to_thread(
            self._register_version,
            version,
            adapter_dir=adapter_dir,
            run_id=recorder.run_id,
            metrics=metrics,
            counts=prepared.counts,
        )
        await recorder.set(adapter_version=version, stage="evaluate")
        return TrainedCandidate(version=version, metrics=metrics)

    async def _evaluate(self, recorder: RunRecorder, prepared: PreparedData, trained: TrainedCandidate) -> Verdict:
        """Load the candidate beside the active version and let the gate decide."""
        t = self._settings.training
        with recorder.timed("evaluation_s"):
            candidate = await self._registry.load(trained.version)
            if prepared.gate_items:
                report = await run_gate(
                    prepared.gate_items,
                    ask=self._ask_model,
                    candidate_model=candidate.model,
                    active_model=self._registry.active.model,
                    system_prompt=self._settings.serving.system_prompt,
                    thresholds=GateThresholds(margin=t.gate_margin, regression_tolerance=t.gate_regression_tolerance),
                    reviewed=self._reviewed if self._memory is not None else None,
                )
                verdict = Verdict(
                    gate={**report.to_json(), "against": self._registry.active.version},
                    promote=report.promote,
                    reason=report.reason,
                )
            else:
                verdict = Verdict(
                    gate={"promote": True, "reason": "gate disabled"}, promote=True, reason="gate disabled"
                )
        await asyncio.to_thread(self._store_gate, trained.version, verdict.gate)
        await recorder.set(
            metrics={"gate": verdict.gate},
            timings=recorder.timings,
            stage="promote" if verdict.promote else "rejected",
        )
        return verdict

    async def _reject_candidate(self, recorder: RunRecorder, trained: TrainedCandidate, verdict: Verdict) -> None:
        version, kept = trained.version, self._registry.active.version
        run = await asyncio.to_thread(self._reject, recorder.run_id, version=version, reason=verdict.reason, kept=kept)
        await self._registry.discard(version)
        log.info("cycle.rejected run=%s version=%s reason=%s", recorder.run_id, version, verdict.reason)
        scores = {"gate": verdict.gate, "training": trained.metrics}
        self._publish(
            AdminEventKind.rejected, run, version=version, previous=kept, reason=verdict.reason, metrics=scores
        )

    async def _promote_candidate(self, recorder: RunRecorder, trained: TrainedCandidate, verdict: Verdict) -> None:
        version = trained.version
        with recorder.timed("swap_s", digits=3):
            run = await asyncio.to_thread(self._existing_run, recorder.run_id)
            audit = _cycle_entry(run, action="promote", target=version, gate=verdict.reason)
            await self._registry.promote(version, audit=audit)
            previous = self._registry.previous  # read before anything can await: the swap just made is the last one
        await recorder.set(status=RunStatus.succeeded, stage="done", timings=recorder.timings)
        log.info(
            "cycle.succeeded run=%s version=%s gate=%s timings=%s",
            recorder.run_id,
            version,
            verdict.reason,
            recorder.timings,
        )
        self._publish(
            AdminEventKind.promoted,
            run,
            version=version,
            previous=previous.version if previous is not None else None,
            reason=verdict.reason,
            metrics={"gate": verdict.gate, "training": trained.metrics},
        )

    # --- store work, run in worker threads ----------------------------------------------------
    def _write_datasets(self, datasets: Datasets, run_dir: Path) -> tuple[Path, Path | None]:
        prompt = self._settings.serving.system_prompt
        sft_path = write_jsonl(run_dir / SFT_FILENAME, sft_rows(datasets, system_prompt=prompt))
        dpo = dpo_rows(datasets, system_prompt=prompt)
        return sft_path, write_jsonl(run_dir / DPO_FILENAME, dpo) if dpo else None

    def _next_version_name(self) -> str:
        with session_scope(self._engine) as session:
            return adapter_repo.next_version_name(session=session)

    def _register_version(
        self, version: str, *, adapter_dir: Path, run_id: int, metrics: dict[str, Any], counts: dict[str, Any]
    ) -> None:
        readable_as_umask_allows(adapter_dir)
        with session_scope(self._engine) as session:
            adapter_repo.register_version(
                session=session,
                version=version,
                path=str(adapter_dir.resolve()),
                run_id=run_id,
                metrics={"training": metrics, "counts": counts},
            )

    def _store_gate(self, version: str, gate: dict[str, Any]) -> None:
        with session_scope(self._engine) as session:
            adapter_repo.update_version_metrics(session=session, version=version, metrics={"gate": gate})

    def _reject(self, run_id: int, *, version: str, reason: str, kept: str) -> TrainingRun:
        """Mark the candidate rejected, audit it and close the run, in one commit."""
        with session_scope(self._engine) as session:
            run = _existing_run(session, run_id)
            adapter_repo.set_version_status(
                session=session, version=version, status=AdapterStatus.rejected, commit=False
            )
            audit_repo.add_audit(
                session=session, entry=_cycle_entry(run, action="reject", target=version, reason=reason, kept=kept)
            )
            # update_run commits the session: the rejected version, its audit event and the run's outcome at once.
            return run_repo.update_run(
                session=session, run_id=run_id, status=RunStatus.rejected, error=f"kept {kept}: {reason}"
            )

    def _existing_run(self, run_id: int) -> TrainingRun:
        with session_scope(self._engine) as session:
            return _existing_run(session, run_id)

    def _publish(
        self,
        kind: AdminEventKind,
        run: TrainingRun,
        *,
        version: str | None,
        previous: str | None = None,
        reason: str | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        if self._events is None:
            return
        event = AdminEvent(
            kind=kind,
            actor=CYCLE_ACTOR,
            source=CYCLE_SOURCE,
            version=version,
            previous=previous,
            run_id=run.id,
            trigger=run.trigger,
            triggered_by=run.triggered_by,
            reason=reason,
            metrics=metrics or {},
        )
        self._events.publish(event)

    async def _prepare(self, *, on_progress: Any) -> Datasets:
        datasets = await asyncio.to_thread(self._build)
        await self._augment(datasets, on_progress=on_progress)
        return datasets

    def _build(self) -> Datasets:
        t = self._settings.training
        policy = CurationPolicy(
            duplicate_threshold=t.duplicate_threshold,
            max_extra_phrasings=t.max_extra_phrasings,
            max_corrections_per_user=t.max_corrections_per_user,
            max_votes_per_user=t.max_votes_per_user,
        )
        with session_scope(self._engine) as session:
            return build_datasets(session=session, policy=policy, redactor=self._redactor())

    def _redactor(self) -> Redactor:
        # Read at each cycle, like the other training settings: role addresses on these domains stay in the data.
        return Redactor(company_email_domains=self._settings.training.company_email_domains)

    async def _augment(self, datasets: Datasets, *, on_progress: Any) -> None:
        await add_paraphrases(
            datasets,
            per_question=self._settings.training.paraphrases_per_question,
            generate=base_model_sampler(self._client, self._registry, seed=self._settings.training.seed),
            seed=self._settings.training.seed,
            on_progress=on_progress,
            # A corrected group's paraphrases are written once and kept with its memory entry.
            stored=self._memory.paraphraser.paraphrases_of
            if self._memory is not None and self._memory.paraphraser is not None
            else None,
        )
        if datasets.examples and self._settings.training.anchors:
            await add_anchors(datasets, answer=self._base_answer)
        # Model-written paraphrases and anchor answers are text too: nothing reaches a file unredacted.
        await asyncio.to_thread(redact_datasets, datasets, redactor=self._redactor())

    def _continue_from(self) -> tuple[str, datetime] | None:
        """With `continue` or `incremental`: the active adapter's folder, and when the data it learnt was taken."""
        if self._settings.training.strategy == "from_base":
            return None
        with session_scope(self._engine) as session:
            active = adapter_repo.get_active_version(session=session)
            if active is None or active.path is None:
                return None  # nothing to continue from: the first adapter trains from the base model
            made_by = run_repo.get_run(session=session, run_id=active.run_id) if active.run_id else None
            # Feedback given while that adapter trained is newer than its dataset: the run's start is the cut.
            since = made_by.started_at if made_by and made_by.started_at else active.created_at
            return active.path, since

    def _too_few_new_examples(self, run_id: int, datasets: Datasets, *, force: bool) -> str | None:
        """Why a nightly cycle should not train yet, or None; a forced (manual) cycle always trains."""
        minimum = self._settings.training.min_new_examples
        with session_scope(self._engine) as session:
            run = run_repo.get_run(session=session, run_id=run_id)
            last = run_repo.last_finished_run(session=session)
        if force or run is None or run.trigger != "nightly":
            return None
        new = datasets.new_examples(since=last.started_at if last else None)
        if new >= minimum:
            return None
        since = f"since run {last.id}" if last else "with no trained run yet"
        return f"{new} new approved example{'' if new == 1 else 's'} {since}; the minimum is {minimum}"

    async def _reviewed(self, question: str, messages: list[Message]) -> list[Message]:
        """`messages` with the memory's reviewed answers for `question`, as serving puts them into the prompt."""
        assert self._memory is not None
        recall = await asyncio.to_thread(self._memory.recall, question)
        return with_reviewed(messages, recall.hits)

    async def _ask_model(self, model: str, messages: list[Message]) -> str:
        return await self._client.chat(
            model=model, messages=messages, max_tokens=self._settings.training.gate_max_tokens, temperature=0.0
        )

    async def _base_answer(self, question: str) -> str:
        messages = prompt_messages(system_prompt=self._settings.serving.system_prompt, context=[], question=question)
        return await self._client.chat(
            model=self._registry.served_name("base"),
            messages=messages,
            max_tokens=self._settings.serving.max_answer_tokens,
            temperature=0.0,
        )

    def _train_spec(
        self, *, sft_path: Path, dpo_path: Path | None, output_dir: Path, init_adapter: str | None
    ) -> TrainSpec:
        return train_spec(
            self._settings, sft_path=sft_path, dpo_path=dpo_path, output_dir=output_dir, init_adapter=init_adapter
        )


def readable_as_umask_allows(folder: Path) -> None:
    """Give the adapter's files the mode the umask allows (0644 under 022): safetensors writes its files 0600.

    vLLM may read the folder as another user (its own container, another host on a shared mount).
    """
    mode = 0o666 & ~_UMASK
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)


def _current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it back at once
    os.umask(mask)
    return mask


# Read once, at import, while no other thread of ours creates files.
_UMASK = _current_umask()


def _existing_run(session: Session, run_id: int) -> TrainingRun:
    run = run_repo.get_run(session=session, run_id=run_id)
    if run is None:
        raise LookupError(f"run {run_id} does not exist")
    return run


def _cycle_entry(
    run: TrainingRun, *, action: str, target: str | None, outcome: str = "ok", **detail: Any
) -> AuditEntry:
    """An audit event of the cycle's own decision, naming the run and who started it."""
    return AuditEntry(
        actor=CYCLE_ACTOR,
        source=CYCLE_SOURCE,
        action=action,
        target=target,
        outcome=outcome,
        detail={"run_id": run.id, "trigger": run.trigger, "triggered_by": run.triggered_by, **detail},
    )
