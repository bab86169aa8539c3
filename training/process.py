"""Run training in a child process, so that serving stays responsive and a crash stays contained.

The child is killed when the process that started it dies, however it dies (a parent-death signal): a
trainer left running by a crashed service would hold gigabytes of memory for nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.child_env import child_environment, die_with_parent
from training.trainer import TrainSpec

log = logging.getLogger(__name__)


class TrainingFailed(RuntimeError):
    pass


def trainer_command(spec_path: Path, *, processes: int = 1) -> list[str]:
    """`python -m training.worker SPEC`; with several processes (one per GPU), the same under `accelerate launch`,
    which starts them with the environment DDP needs (the Trainer then shards batches and syncs gradients)."""
    worker = ["--module", "training.worker", str(spec_path)]
    if processes <= 1:
        return [sys.executable, "-m", "training.worker", str(spec_path)]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
    return [*launch, "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *worker]


async def train_in_subprocess(
    spec: TrainSpec,
    *,
    spec_path: Path,
    log_path: Path,
    on_event: Callable[[dict[str, Any]], None],
    processes: int = 1,
) -> dict[str, Any]:
    """Run `python -m training.worker` (in `processes` processes), relay its progress events, return its metrics."""
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(spec.to_json())
    with log_path.open("ab") as stderr_log:
        process = await asyncio.create_subprocess_exec(
            *trainer_command(spec_path, processes=processes),
            stdout=asyncio.subprocess.PIPE, stderr=stderr_log,
            env=child_environment(),  # the trainer needs no Slack token, database URL or TUNELOOP_ setting
            preexec_fn=die_with_parent(signal.SIGKILL),  # nothing of a dead service's run is kept anyway
        )  # fmt: skip
        assert process.stdout is not None
        result: dict[str, Any] | None = None
        error: str | None = None
        try:
            async for raw in process.stdout:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if event.get("event") == "done":
                    result = event.get("metrics", {})
                elif event.get("event") == "error":
                    error = str(event.get("message"))
                else:
                    on_event(event)
            code = await process.wait()
        except asyncio.CancelledError:
            process.kill()
            await process.wait()
            raise
    if code != 0 or result is None:
        cause = error or f"the training process exited with code {code}"
        raise TrainingFailed(f"{cause} (log: {log_path})")
    return result
