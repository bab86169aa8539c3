"""`tuneloop worker`: trains the cycles that service processes queue, on this machine or on a GPU node.

With `training.runner=worker` a service only queues runs (a retrain from Slack, the CLI or HTTP, and the
nightly job). A worker takes the oldest queued run under the cycle's database lock (`tuneloop.cycle.CYCLE_LOCK`,
with its heartbeat: one cycle at a time, whichever process runs it) and runs the same `TuningCycle` a local
service runs, with its own inference client to the configured vLLM server(s) and its own adapter registry.
Its promotion is written to the store, which every service process follows (`serving.replicas`). Adapters and
run folders go under `storage.shared_dir`, which the vLLM hosts must read at the same absolute path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from serving.client import InferenceClient
from serving.notify import AdminEvents
from serving.registry import AdapterRegistry
from store import runs as run_repo
from store.db import make_engine, migrate, session_scope
from store.models import TrainingRun
from tuneloop.cycle import TuningCycle
from tuneloop.service import reviewed_memory
from tuneloop.settings import Settings

log = logging.getLogger(__name__)
# How often the run being trained is read back for the progress lines.
WATCH_INTERVAL_S = 1.0


@dataclass(kw_only=True)
class TrainingWorker:
    settings: Settings
    engine: Engine
    client: InferenceClient
    registry: AdapterRegistry
    cycle: TuningCycle
    events: AdminEvents

    @property
    def busy(self) -> bool:
        """True while a claimed run is being trained."""
        return self.cycle.running

    async def run_once(self, *, watch: Callable[[TrainingRun], None] | None = None) -> TrainingRun | None:
        """Train the oldest queued run, if one waits and the lock is free; its final record, or None.

        `watch` is called with the run's record whenever its status, stage or progress changes.
        """
        watcher: asyncio.Task[None] | None = None

        def claimed(run_id: int) -> None:
            nonlocal watcher
            if watch is not None:
                watcher = asyncio.create_task(self._watch(run_id, watch))

        try:
            run_id = await self.cycle.run_next_queued(on_claimed=claimed)
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        if run_id is None:
            return None
        run = await asyncio.to_thread(self._run, run_id)
        if watch is not None:
            watch(run)
        log.info("worker.finished run=%s status=%s version=%s", run_id, run.status, run.adapter_version or "-")
        return run

    async def run_forever(self, *, stop: asyncio.Event, watch: Callable[[TrainingRun], None] | None = None) -> None:
        """Train queued runs until `stop` is set, looking for one every `training.worker_poll_interval_s`.

        While vLLM does not answer, nothing is claimed: the run waits queued rather than failing for it.
        """
        unhealthy_logged = False
        while not stop.is_set():
            if not await self.client.healthy():
                if not unhealthy_logged:
                    log.error("worker.vllm_unavailable url=%s: queued runs wait", self.client.base_url)
                    unhealthy_logged = True
            else:
                if unhealthy_logged:
                    log.info("worker.vllm_available url=%s", self.client.base_url)
                    unhealthy_logged = False
                try:
                    if await self.run_once(watch=watch) is not None:
                        continue  # another run may be queued already
                except Exception:  # the database is unreachable, say: a run is not lost, the next look tries again
                    log.exception("worker.claim_failed")
            with contextlib.suppress(TimeoutError):
                # Idle: the next look for a queued run, unless told to stop meanwhile.
                await asyncio.wait_for(stop.wait(), timeout=self.settings.training.worker_poll_interval_s)

    async def close(self) -> None:
        await self.registry.wait_idle()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.events.wait_idle(), timeout=10)
        await self.client.aclose()
        self.engine.dispose()

    async def _watch(self, run_id: int, watch: Callable[[TrainingRun], None]) -> None:
        seen: tuple[object, ...] | None = None
        while True:
            try:
                run = await asyncio.to_thread(self._run, run_id)
            except Exception as error:  # progress lines only: the run itself goes on
                log.warning("worker.watch_failed run=%s error=%s", run_id, type(error).__name__)
            else:
                state = (run.status, run.stage, run.progress.get("step"), run.progress.get("total"))
                if state != seen:
                    seen = state
                    watch(run)
            await asyncio.sleep(WATCH_INTERVAL_S)  # a progress display's refresh period, not synchronisation

    def _run(self, run_id: int) -> TrainingRun:
        with session_scope(self.engine) as session:
            run = run_repo.get_run(session=session, run_id=run_id)
        if run is None:
            raise LookupError(f"run {run_id} does not exist")
        return run


def build_worker(settings: Settings) -> TrainingWorker:
    """The worker's own store engine, vLLM client, registry, memory and cycle, from the settings."""
    migrate(settings.store_url)
    engine = make_engine(settings.store_url)
    client = InferenceClient(settings.vllm_base_urls, timeout_s=settings.serving.request_timeout_s)
    # No merged engine: the service processes serve the active version; the worker only loads candidates.
    registry = AdapterRegistry(
        client=client,
        engine=engine,
        base_model_name=settings.serving.served_model_name,
        prefix=settings.serving.adapter_prefix,
    )
    events = AdminEvents()
    slack = settings.slack
    if slack.bot_token is not None and slack.admin_channel:
        # Promotions, rejections and failed cycles are the worker's to tell: the services only queued them.
        from slack_sdk.web.async_client import AsyncWebClient

        from bot.admin_channel import SlackAdminChannel

        slack_client = AsyncWebClient(token=slack.bot_token.get_secret_value(), base_url=slack.api_url)
        events.attach(SlackAdminChannel(client=slack_client, channel=slack.admin_channel))
    cycle = TuningCycle(
        settings=settings,
        engine=engine,
        client=client,
        registry=registry,
        events=events,
        # The gate scores answers with the reviewed answers in the prompt, as serving asks them.
        memory=reviewed_memory(settings, engine=engine, client=client, registry=registry),
    )
    return TrainingWorker(
        settings=settings, engine=engine, client=client, registry=registry, cycle=cycle, events=events
    )
