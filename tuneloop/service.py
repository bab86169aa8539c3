"""Build the running service from Settings: store, vLLM child process, registry, API, nightly job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI
from slack_bolt.async_app import AsyncApp
from sqlalchemy import Engine

from bot.admin_channel import SlackAdminChannel
from bot.app import attach_slack, build_slack_app, start_socket_mode
from serving.access import AccessPolicy, is_loopback
from serving.adapter_import import AdapterImporter
from serving.admin import AdminService
from serving.answers import AnswerService, AnswerSettings
from serving.api.deps import Services
from serving.app import build_api
from serving.client import InferenceClient
from serving.credentials import Authenticator
from serving.engine import EngineConfig, VLLMProcess
from serving.errors import TuneloopError
from serving.feedback import FeedbackService
from serving.memory import ReviewedMemory
from serving.memory_paraphrases import MemoryParaphraser, base_model_sampler
from serving.merged import MergedEngine
from serving.metrics import ServiceMetrics, StoredState
from serving.notify import AdminEvents
from serving.registry import AdapterRegistry
from serving.replicas import ActiveVersionWatcher, FollowSettings
from store.db import make_engine, migrate
from training.redact import Redactor
from tuneloop.base_model import BaseModelError, check_model_folder
from tuneloop.cycle import CYCLE_LOCK, LOCK_TTL_S, TuningCycle
from tuneloop.retention import prune_after_nightly
from tuneloop.scheduler import build_scheduler
from tuneloop.settings import Settings

log = logging.getLogger(__name__)
# How often a running engine is probed for liveness.
PROBE_INTERVAL_S = 5.0


@dataclass
class RestartBackoff:
    """Waits between engine restarts: doubling from `first_s` up to `cap_s`, back to `first_s` once it served."""

    first_s: float = 2.0
    cap_s: float = 60.0
    failures: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.first_s * 2.0**self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


@dataclass(kw_only=True)
class Service:
    app: FastAPI
    services: Services
    cycle: TuningCycle
    vllm: VLLMProcess | None


def engine_config(settings: Settings) -> EngineConfig:
    s = settings.serving
    return EngineConfig(
        model_dir=settings.base_model_dir.resolve(),
        served_model_name=s.served_model_name,
        host=s.vllm_host,
        port=s.vllm_port,
        dtype=s.dtype,
        max_model_len=s.max_model_len,
        max_lora_rank=s.max_lora_rank,
        max_loras=s.max_loras,
        cpu_kv_cache_gib=s.cpu_kv_cache_gib,
        log_path=settings.logs_dir / "vllm.log",
        extra_args=s.extra_vllm_args,
    )


def merged_engine_config(settings: Settings) -> EngineConfig:
    """The second engine: the same model without LoRA slots, whose weights become the active version's."""
    config = engine_config(settings)
    config.port = settings.serving.merged_vllm_port
    config.lora = False
    config.log_path = settings.data_dir / "logs" / "vllm-merged.log"
    return config


def merged_engine(settings: Settings) -> tuple[MergedEngine | None, VLLMProcess | None]:
    """The merged engine and, when this service starts it, its process; (None, None) when it is off."""
    s = settings.serving
    if not s.merged_active or (settings.external_vllm and s.merged_vllm_url is None):
        return None, None
    process = None if s.merged_vllm_url else VLLMProcess(merged_engine_config(settings))
    url = s.merged_vllm_url or merged_engine_config(settings).base_url
    merged = MergedEngine(
        client=InferenceClient(url, timeout_s=s.request_timeout_s),
        model_name=s.served_model_name,
        base_model_dir=settings.base_model_dir.resolve(),
        merged_dir=settings.merged_dir,
        up=False,  # until its keeper has seen it healthy
    )
    return merged, process


def access_policy(settings: Settings) -> AccessPolicy:
    """Roles from the settings; the laptop opt-in opens admin actions only on a loopback listener."""
    open_mode = settings.access.open_on_loopback and not settings.access.admins
    if open_mode and not is_loopback(settings.serving.host):
        log.error(
            "access.open_refused host=%s: open_on_loopback is ignored on a non-loopback address", settings.serving.host
        )
        open_mode = False
    return AccessPolicy(
        reviewers=frozenset(settings.access.reviewers), admins=frozenset(settings.access.admins), open_mode=open_mode
    )


def build_service(settings: Settings) -> Service:
    migrate(settings.store_url)
    engine = make_engine(settings.store_url)
    client = InferenceClient(settings.vllm_base_urls, timeout_s=settings.serving.request_timeout_s)
    merged, merged_process = merged_engine(settings)
    registry = AdapterRegistry(
        client=client,
        engine=engine,
        base_model_name=settings.serving.served_model_name,
        prefix=settings.serving.adapter_prefix,
        merged=merged,
    )
    access = access_policy(settings)
    events = AdminEvents()  # promotions, rollbacks, rejections, failed cycles: to the admins' channel if any
    memory = reviewed_memory(settings, engine=engine, client=client, registry=registry)
    paraphraser = memory.paraphraser
    assert paraphraser is not None
    metrics = ServiceMetrics()
    cycle = TuningCycle(
        settings=settings,
        engine=engine,
        client=client,
        registry=registry,
        events=events,
        memory=memory,
        metrics=metrics,
    )
    answers = AnswerService(
        memory=memory,
        metrics=metrics,
        engine=engine,
        client=client,
        registry=registry,
        settings=AnswerSettings(
            system_prompt=settings.serving.system_prompt,
            max_question_chars=settings.serving.max_question_chars,
            max_answer_tokens=settings.serving.max_answer_tokens,
            temperature=settings.serving.temperature,
            max_context_turns=settings.serving.max_context_turns,
            max_completion_choices=settings.serving.max_completion_choices,
        ),
    )
    vllm = None if settings.external_vllm else VLLMProcess(engine_config(settings))
    services = Services(
        engine=engine,
        client=client,
        registry=registry,
        answers=answers,
        feedback=FeedbackService(engine=engine, access=access, memory=memory, metrics=metrics),
        memory=memory,
        metrics=metrics,
        admin=AdminService(
            engine=engine,
            registry=registry,
            access=access,
            launcher=cycle,
            events=events,
            importer=AdapterImporter(
                engine=engine,
                adapters_dir=settings.adapters_dir,
                base_model_dir=settings.base_model_dir,
                max_rank=settings.serving.max_lora_rank,
                cycle_lock=CYCLE_LOCK,
                lock_ttl_s=LOCK_TTL_S,
            ),
        ),
        access=access,
        authenticator=Authenticator(engine=engine, access=access),
        export_datasets=cycle.export,
        info={
            "store": engine.url.render_as_string(hide_password=True),
            "base_model": str(settings.base_model_dir),
            "access": access.mode,
            "nightly": settings.training.nightly_cron if settings.training.nightly_enabled else "off",
            "training": settings.training.runner,
        },
    )
    slack_app, slack_mode = _build_slack(settings, services, access)
    if slack_app is not None and settings.slack.admin_channel:
        events.attach(SlackAdminChannel(client=slack_app.client, channel=settings.slack.admin_channel))
    services.info["slack"] = "on" if slack_app is not None else "off"
    services.info["slack_mode"] = slack_mode
    metrics.registry.register(
        StoredState(engine=engine, active_version=lambda: registry.active.version, engine_up=services.ready.is_set)
    )

    watcher = ActiveVersionWatcher(
        registry=registry,
        engine=engine,
        ready=services.ready,
        settings=FollowSettings(poll_interval_s=settings.serving.replica_poll_interval_s),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if access.mode == "open":
            log.warning("access.open_mode: no admins configured, every signed-in user may retrain and promote")
        elif access.mode == "no admins":
            log.warning("access.no_admins: admin actions are refused until TUNELOOP_ACCESS__ADMINS names someone")
        cycle.fail_interrupted_runs()
        scheduler = build_scheduler(
            cycle=cycle,
            crontab=settings.training.nightly_cron,
            after_cycle=lambda: asyncio.to_thread(prune_after_nightly, settings=settings, engine=engine),
        )
        if settings.training.nightly_enabled:
            scheduler.start()
        keeper = asyncio.create_task(_keep_engine(services, vllm, settings))
        # Promotions and rollbacks made by any process on this database reach this one's registry.
        follower = asyncio.create_task(watcher.run())
        merged_keeper = (
            asyncio.create_task(_keep_merged_engine(services, merged, merged_process, settings))
            if merged is not None
            else None
        )
        # The embedder's weights and the memory's index load now, not on the first question after a start.
        warming = asyncio.create_task(_warm_memory(services.memory))
        paraphrasing = asyncio.create_task(_paraphrase_memory(services, paraphraser))
        socket_mode = None
        if slack_app is not None and settings.slack.app_token is not None:
            try:
                socket_mode = await start_socket_mode(slack_app, app_token=settings.slack.app_token.get_secret_value())
            except Exception:
                # Slack being unreachable must not take the API down with it.
                log.exception("slack.socket_mode_failed: the service runs without Slack")
        try:
            yield
        finally:
            if socket_mode is not None:
                await socket_mode.close_async()  # type: ignore[no-untyped-call]
            for task in (paraphrasing, merged_keeper, follower, keeper):
                if task is None:
                    continue
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await warming
            if scheduler.running:
                scheduler.shutdown(wait=False)
            # Notices already published (a promotion just before shutdown) still reach the admins' channel.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(events.wait_idle(), timeout=10)
            for process in (vllm, merged_process):
                if process is not None:
                    await asyncio.to_thread(process.stop)
            await client.aclose()
            if merged is not None:
                await merged.client.aclose()
            engine.dispose()

    app = build_api(services, lifespan=lifespan, max_body_bytes=settings.serving.max_body_bytes)
    if slack_app is not None and settings.slack.app_token is None:
        attach_slack(app, slack_app)
    return Service(app=app, services=services, cycle=cycle, vllm=vllm)


def _build_slack(settings: Settings, services: Services, access: AccessPolicy) -> tuple[AsyncApp | None, str]:
    """The Bolt app and a word on its mode: Socket Mode with an app token, HTTP with a signing secret, else off."""
    slack = settings.slack
    if slack.bot_token is None:
        return None, "no bot token: set SLACK_BOT_TOKEN to turn it on"
    if slack.app_token is None and slack.signing_secret is None:
        log.error("slack.off reason=%s", "a bot token is set but neither SLACK_SIGNING_SECRET nor SLACK_APP_TOKEN")
        return None, "set SLACK_SIGNING_SECRET for HTTP mode, or SLACK_APP_TOKEN for Socket Mode"
    slack_app = build_slack_app(
        services=services,
        access=access,
        bot_token=slack.bot_token.get_secret_value(),
        signing_secret=slack.signing_secret.get_secret_value() if slack.signing_secret else None,
        api_url=slack.api_url,
        streaming=slack.streaming,
    )
    return slack_app, "socket mode" if slack.app_token is not None else "http: POST /slack/events"


async def _keep_engine(services: Services, vllm: VLLMProcess | None, settings: Settings) -> None:
    """Start vLLM, load the active adapter, and start both again whenever vLLM dies, backing off between tries."""
    backoff = RestartBackoff()
    while True:
        try:
            if vllm is not None:
                check_model_folder(settings.base_model_dir)
                vllm.start()
                waited = await vllm.wait_healthy(timeout_s=settings.serving.startup_timeout_s)
                log.info("engine.ready url=%s seconds=%.1f", services.client.base_url, waited)
            elif not await services.client.healthy():
                raise TuneloopError(f"the vLLM server at {services.client.base_url} is not healthy")
            await services.registry.restore()
            services.ready.set()
            backoff.reset()
            log.info("service.ready active_adapter=%s", services.registry.active.version)
            while (vllm is None or vllm.running) and await _healthy_or_busy(services):
                await asyncio.sleep(PROBE_INTERVAL_S)  # a liveness probe interval, not synchronisation
            log.error("engine.down action=restart")
        except TuneloopError as error:
            log.error("engine.unavailable error=%s hint=%s", error.message, error.hint or "-")
        except BaseModelError as error:  # the folder went away after start-up: a line, not a traceback, each retry
            log.error("engine.unavailable error=%s", error)
        except Exception:
            log.exception("engine.unexpected_error")
        services.ready.clear()
        services.metrics.engine_restarts.inc()
        if vllm is not None:
            await asyncio.to_thread(vllm.stop)
        delay = backoff.next_delay()
        log.info("engine.retry_in seconds=%.0f attempt=%d", delay, backoff.failures)
        await asyncio.sleep(delay)  # backing off before the next start, not synchronisation


async def _keep_merged_engine(
    services: Services, merged: MergedEngine, process: VLLMProcess | None, settings: Settings
) -> None:
    """Start the merged engine, give it the active version's weights, and again whenever it dies.

    While it is down or reloading, the active version is served through LoRA on the main engine.
    """
    backoff = RestartBackoff()
    while True:
        try:
            if process is not None:
                process.start()
                waited = await process.wait_healthy(timeout_s=settings.serving.startup_timeout_s)
                log.info("merged_engine.ready url=%s seconds=%.1f", merged.client.base_url, waited)
            elif not await merged.client.healthy():
                raise TuneloopError(f"the merged vLLM server at {merged.client.base_url} is not healthy")
            merged.started()  # a fresh start holds the base weights, whatever it served before
            await services.ready.wait()  # the registry knows the active version once the main engine is up
            services.registry.sync_merged()
            backoff.reset()
            while (process is None or process.running) and await merged.client.healthy():
                if merged.idle and merged.serving_version != services.registry.active.version:
                    services.registry.sync_merged()  # a reload that failed earlier is tried again
                await asyncio.sleep(PROBE_INTERVAL_S)  # a liveness probe interval, not synchronisation
            log.error("merged_engine.down action=restart: the active version is served through LoRA meanwhile")
        except TuneloopError as error:
            log.error("merged_engine.unavailable error=%s hint=%s", error.message, error.hint or "-")
        except Exception:
            log.exception("merged_engine.unexpected_error")
        merged.forget()
        if process is not None:
            await asyncio.to_thread(process.stop)
        delay = backoff.next_delay()
        log.info("merged_engine.retry_in seconds=%.0f attempt=%d", delay, backoff.failures)
        await asyncio.sleep(delay)  # backing off before the next start, not synchronisation


async def _warm_memory(memory: ReviewedMemory) -> None:
    if not memory.settings.enabled:
        return
    try:
        await asyncio.to_thread(memory.warm_up)
    except Exception as error:  # answers go on without the memory (AnswerService.recall), and say why in the log
        log.warning("memory.warm_up_failed error=%s", type(error).__name__, exc_info=error)


def reviewed_memory(
    settings: Settings, *, engine: Engine, client: InferenceClient, registry: AdapterRegistry
) -> ReviewedMemory:
    """The memory of reviewed answers with its paraphraser: the service and `tuneloop worker` build it alike, so
    a worker's cycle also trains on the paraphrases kept with each entry instead of writing new ones."""
    paraphraser = MemoryParaphraser(
        engine=engine,
        # Seeded: the same corrections get the same paraphrases, so the nightly training data and the adapter it
        # makes do not change from run to run (unseeded draws failed the gate's regression check in one CI run).
        generate=base_model_sampler(client, registry, seed=settings.training.seed),
        count=settings.memory.paraphrases,
        redactor=Redactor(company_email_domains=settings.training.company_email_domains),
    )
    return ReviewedMemory(engine=engine, settings=settings.memory, paraphraser=paraphraser)


async def _paraphrase_memory(services: Services, paraphraser: MemoryParaphraser) -> None:
    """Paraphrases of reviewed questions, once the engine serves (approvals before that wait in the queue)."""
    await services.ready.wait()
    await paraphraser.run()


async def _healthy_or_busy(services: Services) -> bool:
    # A busy engine can miss one probe; only two misses in a row count as down.
    for _ in range(2):
        if await services.client.healthy():
            return True
    return False
