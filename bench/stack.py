"""The real stack for a benchmark: vLLM's CPU server and the service, in a temporary data dir."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from serving.api.deps import Services
from serving.engine import VLLMProcess
from store.db import session_scope
from store.tokens import create_token
from tuneloop.base_model import pull_default_model
from tuneloop.service import build_service, engine_config
from tuneloop.settings import DEFAULT_BASE_MODEL_DIRNAME, Settings

REPO = Path(__file__).resolve().parent.parent
ADMIN = "bench"


@dataclass
class Stack:
    settings: Settings  # the running service's own object: a change reaches its next cycle
    http: httpx.AsyncClient
    time_to_ready_s: float
    services: Services | None = None  # the running service's own objects (the memory, its paraphraser)


@asynccontextmanager
async def running_stack(
    *, port: int, vllm_port: int, slack: dict[str, str] | None = None, memory: dict[str, Any] | None = None
) -> AsyncIterator[Stack]:
    data_dir = Path(tempfile.mkdtemp(prefix="tuneloop-bench-"))
    model_dir, _ = pull_default_model(REPO / "var" / "models" / DEFAULT_BASE_MODEL_DIRNAME)
    settings = Settings(
        data_dir=data_dir,
        slack=slack or {},
        serving={
            "base_model": model_dir,
            "vllm_port": vllm_port,
            "port": port,
            "vllm_url": f"http://127.0.0.1:{vllm_port}",
        },
        training={"nightly_enabled": False},
        access={"admins": [ADMIN], "reviewers": [ADMIN]},
        memory=memory or {},
    )
    print("starting vLLM ...", flush=True)
    vllm = VLLMProcess(engine_config(settings))
    vllm.start()
    try:
        ready_s = round(await vllm.wait_healthy(timeout_s=600), 1)
        service = build_service(settings)
        server = uvicorn.Server(uvicorn.Config(service.app, host="127.0.0.1", port=port, log_level="warning"))
        serve_task = asyncio.create_task(server.serve())
        with session_scope(service.services.engine) as session:
            token = create_token(session=session, user_id=ADMIN, label="bench").token
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600, headers=headers) as http:
            while (await _healthz(http)) != 200:
                await asyncio.sleep(0.2)  # waiting for readiness
            yield Stack(settings=settings, http=http, time_to_ready_s=ready_s, services=service.services)
        server.should_exit = True
        await serve_task
    finally:
        vllm.stop()


async def teach(http: httpx.AsyncClient, facts: list[tuple[str, str]]) -> None:
    """Ask each question, then correct its answer as a reviewer (approved at once)."""
    for question, correction in facts:
        asked = (await http.post("/api/ask", json={"question": question})).json()
        response = await http.post(
            f"/api/interactions/{asked['interaction_id']}/corrections", json={"text": correction}
        )
        response.raise_for_status()


async def run_cycle(http: httpx.AsyncClient) -> tuple[dict[str, Any], float]:
    """One tuning cycle through the admin API, followed by long polls; the finished run and its wall time."""
    started = time.perf_counter()
    run_id = (await http.post("/admin/train", json={})).json()["run_id"]
    run: dict[str, Any] = (await http.get(f"/admin/runs/{run_id}", params={"wait": 60})).json()
    while run["status"] in ("queued", "running"):
        run = (await http.get(f"/admin/runs/{run_id}", params={"wait": 60})).json()
    return run, round(time.perf_counter() - started, 1)


async def _healthz(http: httpx.AsyncClient) -> int:
    try:
        return (await http.get("/healthz")).status_code
    except httpx.TransportError:
        return 0
