"""Build the running service from Settings: store, vLLM child process, registry, API, nightly job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI

from serving.access import AccessPolicy
from serving.admin import AdminService
from serving.answers import AnswerService, AnswerSettings
from serving.api.deps import Services
from serving.app import build_api
from serving.client import InferenceClient
from serving.engine import EngineConfig, VLLMProcess
from serving.errors import TuneloopError
from serving.feedback import FeedbackService
from serving.registry import AdapterRegistry
from store.db import make_engine, migrate
from tuneloop.base_model import check_model_folder
from tuneloop.cycle import TuningCycle
from tuneloop.scheduler import build_scheduler
from tuneloop.settings import Settings

log = logging.getLogger(__name__)
RESTART_BACKOFF_S = 5.0


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
        log_path=settings.data_dir / "logs" / "vllm.log",
        extra_args=s.extra_vllm_args,
    )


def build_service(settings: Settings) -> Service:
    migrate(settings.store_url)
    engine = make_engine(settings.store_url)
    client = InferenceClient(settings.vllm_base_url, timeout_s=settings.serving.request_timeout_s)
    registry = AdapterRegistry(
        client=client,
        engine=engine,
        base_model_name=settings.serving.served_model_name,
        prefix=settings.serving.adapter_prefix,
    )
    access = AccessPolicy(reviewers=frozenset(settings.access.reviewers), admins=frozenset(settings.access.admins))
    cycle = TuningCycle(settings=settings, engine=engine, client=client, registry=registry)
    answers = AnswerService(
        engine=engine,
        client=client,
        registry=registry,
        settings=AnswerSettings(
            system_prompt=settings.serving.system_prompt,
            max_question_chars=settings.serving.max_question_chars,
            max_answer_tokens=settings.serving.max_answer_tokens,
            temperature=settings.serving.temperature,
        ),
    )
    vllm = None if settings.serving.vllm_url else VLLMProcess(engine_config(settings))
    services = Services(
        engine=engine,
        client=client,
        registry=registry,
        answers=answers,
        feedback=FeedbackService(engine=engine, access=access),
        admin=AdminService(engine=engine, registry=registry, access=access, launcher=cycle),
        export_datasets=cycle.export,
        info={
            "store": engine.url.render_as_string(hide_password=True),
            "base_model": str(settings.base_model_dir),
            "access": "open" if access.open_mode else "restricted",
            "nightly": settings.training.nightly_cron if settings.training.nightly_enabled else "off",
        },
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if access.open_mode:
            log.warning("access.open_mode: no admins configured, every user may retrain, promote and roll back")
        cycle.fail_interrupted_runs()
        scheduler = build_scheduler(cycle=cycle, crontab=settings.training.nightly_cron)
        if settings.training.nightly_enabled:
            scheduler.start()
        keeper = asyncio.create_task(_keep_engine(services, vllm, settings))
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if scheduler.running:
                scheduler.shutdown(wait=False)
            if vllm is not None:
                await asyncio.to_thread(vllm.stop)
            await client.aclose()
            engine.dispose()

    return Service(app=build_api(services, lifespan=lifespan), services=services, cycle=cycle, vllm=vllm)


async def _keep_engine(services: Services, vllm: VLLMProcess | None, settings: Settings) -> None:
    """Start vLLM, load the active adapter, and start both again whenever vLLM dies."""
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
            log.info("service.ready active_adapter=%s", services.registry.active.version)
            while (vllm is None or vllm.running) and await _healthy_or_busy(services):
                await asyncio.sleep(RESTART_BACKOFF_S)  # a liveness probe interval, not synchronisation
            log.error("engine.down: restarting")
        except TuneloopError as error:
            log.error("engine.unavailable error=%s hint=%s", error.message, error.hint)
        except Exception:
            log.exception("engine.unexpected_error")
        services.ready.clear()
        if vllm is not None:
            await asyncio.to_thread(vllm.stop)
        await asyncio.sleep(RESTART_BACKOFF_S)


async def _healthy_or_busy(services: Services) -> bool:
    # A busy engine can miss one probe; only two misses in a row count as down.
    for _ in range(2):
        if await services.client.healthy():
            return True
    return False
