"""The training worker dies with the service that started it, even when the service is killed hard.

The worker is a stand-in (`sleep`) started through train_in_subprocess's own call (its options, the
parent-death signal among them, are kept; only `python -m training.worker` is swapped).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving.test_engine_supervision import REPO, alive, wait_until

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")

# A service in miniature: a cycle's training step, whose worker prints nothing and sleeps.
SERVICE = """
import asyncio, sys
from pathlib import Path
from training.process import train_in_subprocess
from training.trainer import TrainSpec

real_exec = asyncio.create_subprocess_exec

async def stand_in(*_command, **options):
    process = await real_exec(sys.executable, "-c", "import time; time.sleep(120)", **options)
    print(process.pid, flush=True)
    return process

asyncio.create_subprocess_exec = stand_in
folder = Path(sys.argv[1])
spec = TrainSpec(base_model=str(folder / "model"), output_dir=str(folder / "out"), sft_path=str(folder / "sft.jsonl"))
asyncio.run(train_in_subprocess(
    spec, spec_path=folder / "spec.json", log_path=folder / "train.log", on_event=lambda _event: None
))
"""


def test_the_training_worker_dies_when_the_service_is_killed_hard(tmp_path: Path) -> None:
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert service.stdout is not None
        worker = int(service.stdout.readline())
        assert alive(worker)

        os.kill(service.pid, signal.SIGKILL)
        service.wait(timeout=10)

        wait_until(lambda: not alive(worker), timeout=10, what=f"the training worker {worker} exiting")
    finally:
        service.kill()
        service.wait(timeout=10)
