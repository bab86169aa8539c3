"""Several GPUs train one cycle with accelerate: one worker process per GPU, one voice (rank 0) for events.

No GPU here: the process count and the launch command are tested with `torch.cuda` monkeypatched (that boundary,
a CUDA runtime answering, is not reached on these machines); the rank-0 rule runs the real worker module. The
real two-GPU run at the end runs only where two GPUs are present and is skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import make_settings
from training.datasets import write_jsonl
from training.process import train_in_subprocess, trainer_command
from training.trainer import TrainSpec
from training.worker import _emitter
from tuneloop.train_spec import trainer_processes


def gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize(
    ("visible", "device", "wanted", "expected"),
    [
        (0, "auto", None, 1),  # the CPU: one process
        (1, "auto", None, 1),
        (4, "auto", None, 4),  # every visible GPU by default
        (4, "auto", 2, 2),
        (2, "auto", 8, 2),  # never more than are there
        (4, "cpu", None, 1),  # the CPU forced on a GPU host
    ],
)
def test_a_cycle_trains_on_every_gpu_it_may_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, visible: int, device: str, wanted: int | None, expected: int
) -> None:
    gpus(monkeypatch, visible)
    settings = make_settings(
        tmp_path, base_model_dir=tmp_path, vllm_url="http://127.0.0.1:1", training={"device": device, "gpus": wanted}
    )
    assert trainer_processes(settings) == expected


def test_one_process_is_the_plain_worker_and_several_are_an_accelerate_launch(tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.json"
    assert trainer_command(spec_path) == [sys.executable, "-m", "training.worker", str(spec_path)]
    several = trainer_command(spec_path, processes=4)
    assert several[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in several and several[several.index("--num_processes") + 1] == "4"
    assert several[-3:] == ["--module", "training.worker", str(spec_path)]


def test_the_launch_command_is_one_accelerate_accepts() -> None:
    from accelerate.commands.launch import launch_command_parser

    parsed = launch_command_parser().parse_args(trainer_command(Path("/tmp/spec.json"), processes=2)[3:])
    assert (parsed.multi_gpu, parsed.num_processes, parsed.module) == (True, 2, True)
    assert parsed.training_script == "training.worker" and parsed.training_script_args == ["/tmp/spec.json"]


@pytest.mark.parametrize(("rank", "speaks"), [(None, True), ("0", True), ("1", False), ("3", False)])
def test_only_the_main_process_reports(monkeypatch: pytest.MonkeyPatch, rank: str | None, speaks: bool) -> None:
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    out = io.StringIO()
    _emitter(out)({"event": "done", "metrics": {}})
    assert bool(out.getvalue()) is speaks
    if speaks:
        assert json.loads(out.getvalue()) == {"event": "done", "metrics": {}}


ROWS = [
    {
        "prompt": [{"role": "user", "content": f"Who approves travel expenses, question {i}?"}],
        "completion": [{"role": "assistant", "content": "Travel expenses are approved by Marta Kowalski."}],
    }
    for i in range(8)
]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="fewer than two GPUs on this machine")
async def test_a_real_run_on_two_gpus_saves_one_adapter(base_model_dir: Path, tmp_path: Path) -> None:
    spec = TrainSpec(
        base_model=str(base_model_dir),
        output_dir=str(tmp_path / "adapter"),
        sft_path=str(write_jsonl(tmp_path / "sft.jsonl", ROWS)),
        sft_epochs=1,
        dpo_epochs=0,
        batch_size=2,
    )
    events: list[dict[str, object]] = []
    metrics = await train_in_subprocess(
        spec, spec_path=tmp_path / "spec.json", log_path=tmp_path / "train.log", on_event=events.append, processes=2
    )
    assert metrics["device"]["kind"] == "cuda"  # type: ignore[index]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    # Eight rows, two per batch on each of two GPUs: two steps; the events come from the main process alone.
    assert metrics["sft"]["steps"] == 2  # type: ignore[index]
    assert events and all(e.get("stage") == "sft" for e in events)
