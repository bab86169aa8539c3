"""Shared fixtures: the real base model, one real vLLM server per test session, and a running service."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlmodel import Session

from serving.engine import EngineConfig, VLLMProcess
from store import runs as run_repo
from store.db import session_scope
from store.models import RunStatus
from store.tokens import create_token
from tuneloop.base_model import pull_default_model
from tuneloop.service import Service, build_service
from tuneloop.settings import DEFAULT_BASE_MODEL_DIRNAME, Settings

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The real SmolLM2-135M-Instruct folder (`make test` pulls it; pulled here if missing)."""
    folder, _created = pull_default_model(REPO / "var" / "models" / DEFAULT_BASE_MODEL_DIRNAME)
    return folder


def running_engine(
    model_dir: Path, log_dir: Path, *, lora: bool = True, max_model_len: int = 2048, max_loras: int = 3, kv_gib: int = 2
) -> Iterator[str]:
    """A real vLLM OpenAI server (CPU build) on a free port, as tuneloop starts it; yields its URL, then stops it."""
    process = VLLMProcess(
        EngineConfig(
            model_dir=model_dir,
            served_model_name="tuneloop-base",
            host="127.0.0.1",
            port=free_port(),
            dtype="float32",
            max_model_len=max_model_len,
            max_lora_rank=16,
            max_loras=max_loras,
            cpu_kv_cache_gib=kv_gib,
            log_path=log_dir / "vllm.log",
            lora=lora,
        )
    )
    process.start()
    try:
        asyncio.run(process.wait_healthy(timeout_s=600))
    except Exception:
        process.stop()
        raise
    yield process.config.base_url
    process.stop()


@pytest.fixture(scope="session")
def vllm_url(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real vLLM OpenAI server (CPU build) for the whole session, with runtime LoRA loading."""
    yield from running_engine(base_model_dir, tmp_path_factory.mktemp("vllm"))


@pytest.fixture(scope="session")
def merged_vllm_url(base_model_dir: Path, vllm_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second real vLLM server as tuneloop starts it for the merged active version: no LoRA, in-place reloads.

    Started after `vllm_url` is healthy, so that the two never compile at the same time on two cores.
    """
    yield from running_engine(base_model_dir, tmp_path_factory.mktemp("vllm-merged"), lora=False, kv_gib=1)


@pytest.fixture(scope="session")
def adapter_dirs(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three real LoRA adapters of the base model (random B weights, so each answers differently)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    folders = []
    for seed in range(3):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        peft_model = get_peft_model(model, config)
        folder = root / f"adapter-{seed}"
        peft_model.save_pretrained(folder)
        folders.append(folder)
    return folders


def record_succeeded_run(session: Session) -> int:
    """A nightly run that trained, finished now: what came before it is no longer new."""
    run = run_repo.create_run(session=session, trigger="nightly", triggered_by=None)
    assert run.id is not None
    run_repo.update_run(session=session, run_id=run.id, status=RunStatus.running)
    run_repo.update_run(session=session, run_id=run.id, status=RunStatus.succeeded)
    return run.id


def make_settings(tmp_path: Path, *, base_model_dir: Path, vllm_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "var",
        "serving": {
            "base_model": base_model_dir,
            "vllm_url": vllm_url,
            "port": free_port(),
            # Tests share one vLLM server: a prefix of their own keeps their v0001s apart.
            "adapter_prefix": f"t{uuid.uuid4().hex[:8]}-",
        },
        "training": {"nightly_enabled": False},
        "access": {"reviewers": ["U_REVIEWER"], "admins": ["U_ADMIN"]},
    }
    for key, value in overrides.items():
        current = values.get(key)
        values[key] = {**current, **value} if isinstance(current, dict) and isinstance(value, dict) else value
    return Settings(**values)  # type: ignore[arg-type]


class RunningService:
    """The real app under uvicorn on a free port, in a thread of this process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service: Service = build_service(settings)
        self.url = f"http://127.0.0.1:{settings.serving.port}"
        config = uvicorn.Config(self.service.app, host="127.0.0.1", port=settings.serving.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self, *, wait_ready: bool = True, timeout_s: float = 120) -> RunningService:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"{self.url}/healthz", timeout=5)
                if not wait_ready or response.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # polling the server's readiness
        raise TimeoutError(f"service at {self.url} not ready in {timeout_s}s")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


def issue_token(running: RunningService, user_id: str) -> str:
    """A real API token for `user_id`, created in the service's own database (as `tuneloop token create` does)."""
    with session_scope(running.service.services.engine) as session:
        return create_token(session=session, user_id=user_id).token


def bearer(running: RunningService, user_id: str) -> dict[str, str]:
    """Headers that authenticate as `user_id` (a fresh token)."""
    return {"Authorization": f"Bearer {issue_token(running, user_id)}"}


class ApiCaller:
    """HTTP calls to a running service as one user, with that user's bearer token."""

    def __init__(self, running: RunningService, user_id: str) -> None:
        self.user_id = user_id
        self.token = issue_token(running, user_id)
        self._client = httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._client.request(method, path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._client.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._client.post(path, **kwargs)

    def close(self) -> None:
        self._client.close()


@pytest.fixture
def service(tmp_path: Path, base_model_dir: Path, vllm_url: str) -> Iterator[RunningService]:
    running = RunningService(make_settings(tmp_path, base_model_dir=base_model_dir, vllm_url=vllm_url)).start()
    yield running
    running.stop()


class ServeProcess:
    """`tuneloop serve` in its own OS process, on another service's database and vLLM server(s)."""

    def __init__(self, settings: Settings, *, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.with_suffix(".log")
        environment = {
            **os.environ,
            "TUNELOOP_DATA_DIR": str(data_dir),
            "TUNELOOP_STORE__URL": settings.store_url,
            "TUNELOOP_SERVING__PORT": str(self.port),
            "TUNELOOP_SERVING__VLLM_URL": settings.vllm_base_url,
            "TUNELOOP_SERVING__BASE_MODEL": str(settings.base_model_dir),
            "TUNELOOP_SERVING__ADAPTER_PREFIX": settings.serving.adapter_prefix,
            "TUNELOOP_TRAINING__NIGHTLY_ENABLED": "false",
            "TUNELOOP_ACCESS__REVIEWERS": '["U_REVIEWER"]',
            "TUNELOOP_ACCESS__ADMINS": '["U_ADMIN"]',
            **env,
        }
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "tuneloop"), "serve"],
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 120) -> ServeProcess:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process.poll() is None, self.log_path.read_text()[-2000:]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"`tuneloop serve` was not healthy in {timeout_s:.0f} s"
            time.sleep(0.2)  # polling the process's readiness, not standing in for an event

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log.close()


# The memory of reviewed answers off: answers show what the adapter alone has learnt (tests of training and gate).
ADAPTER_ONLY = {"memory": {"enabled": False}}


@pytest.fixture
def adapter_only_service(tmp_path: Path, base_model_dir: Path, vllm_url: str) -> Iterator[RunningService]:
    settings = make_settings(tmp_path, base_model_dir=base_model_dir, vllm_url=vllm_url, **ADAPTER_ONLY)
    running = RunningService(settings).start()
    yield running
    running.stop()


# Listens on a port, says so, and waits: what an orphaned vLLM looks like from outside.
_LISTENER = """
import socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
print("listening", flush=True)
time.sleep(120)
"""


@pytest.fixture
def port_held() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Another process listening on a free port: (the process, the port)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", _LISTENER, str(port)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "listening"
    yield process, port
    process.kill()
    process.wait(timeout=10)
