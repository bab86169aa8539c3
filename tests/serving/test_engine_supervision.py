"""Supervision of the vLLM child: it dies with the service, even a hard-killed one, and a held port is named.

The child here is a stand-in (`sleep`) started through VLLMProcess's own code path (EngineConfig's
`launch_command`); the real vLLM gets the same Popen call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serving.engine import EngineConfig, VLLMProcess, port_holder
from serving.errors import EngineUnavailable
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
STAND_IN = [sys.executable, "-c", "import time; time.sleep(120)"]
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal and /proc are Linux's")

# A service in miniature: it starts the engine as the service does, prints the child's pid, and waits to be killed.
SERVICE = """
import sys, time
from pathlib import Path
from serving.engine import EngineConfig, VLLMProcess
folder, port = Path(sys.argv[1]), int(sys.argv[2])
vllm = VLLMProcess(EngineConfig(
    model_dir=folder / "model", served_model_name="tuneloop-base", host="127.0.0.1", port=port, dtype="float32",
    max_model_len=256, max_lora_rank=8, max_loras=1, cpu_kv_cache_gib=1, log_path=folder / "vllm.log",
    launch_command=[sys.executable, "-c", "import time; time.sleep(120)"],
))
vllm.start()
print(vllm.pid, flush=True)
time.sleep(120)
"""


def engine_config(tmp_path: Path, *, port: int) -> EngineConfig:
    return EngineConfig(
        model_dir=tmp_path / "model",
        served_model_name="tuneloop-base",
        host="127.0.0.1",
        port=port,
        dtype="float32",
        max_model_len=256,
        max_lora_rank=8,
        max_loras=1,
        cpu_kv_cache_gib=1,
        log_path=tmp_path / "vllm.log",
        launch_command=STAND_IN,
    )


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(condition: object, *, timeout: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        time.sleep(0.05)  # polling another process's state, with a deadline


def test_the_vllm_child_dies_when_the_service_is_killed_hard(tmp_path: Path) -> None:
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE, str(tmp_path), str(free_port())], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert service.stdout is not None
        child = int(service.stdout.readline())
        assert alive(child)

        os.kill(service.pid, signal.SIGKILL)  # no handler, no cleanup: only the kernel can tell the child
        service.wait(timeout=10)

        wait_until(lambda: not alive(child), timeout=10, what=f"the engine child {child} exiting")
    finally:
        service.kill()
        service.wait(timeout=10)


def test_a_held_port_is_named_with_its_holder(port_held: tuple[subprocess.Popen[str], int]) -> None:
    process, port = port_held
    holder = port_holder("127.0.0.1", port)
    assert holder is not None
    assert f"pid {process.pid}" in holder and "socket" in holder  # its command line
    assert port_holder("127.0.0.1", free_port()) is None


def test_the_engine_refuses_to_start_on_a_held_port(
    tmp_path: Path, port_held: tuple[subprocess.Popen[str], int]
) -> None:
    process, port = port_held
    vllm = VLLMProcess(engine_config(tmp_path, port=port))
    with pytest.raises(EngineUnavailable) as refused:
        vllm.start()
    assert f"port {port}" in refused.value.message and f"pid {process.pid}" in refused.value.message
    assert "TUNELOOP_SERVING__VLLM_PORT" in (refused.value.hint or "")
    assert vllm.pid is None  # nothing was started
