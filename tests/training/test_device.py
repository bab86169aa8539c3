"""The trainer's device: CUDA (bfloat16 where supported) when torch sees a GPU, else the CPU in float32.

The machines these tests run on have no GPU, so the choice is tested with `torch.cuda.is_available` (and
`is_bf16_supported`) monkeypatched: that boundary, a real CUDA runtime answering, is not reached here. The real
step on CUDA at the end runs only where a GPU is present and is skipped, with the reason, everywhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from training.datasets import write_jsonl
from training.trainer import TrainDevice, TrainSpec, _common_args, choose_device, train
from tuneloop.settings import TrainingSettings


def fake_gpu(monkeypatch: pytest.MonkeyPatch, *, present: bool, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: present)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)


def spec(tmp_path: Path, **changes: Any) -> TrainSpec:
    return TrainSpec(base_model="m", output_dir=str(tmp_path / "out"), sft_path=str(tmp_path / "sft.jsonl"), **changes)


@pytest.mark.parametrize(
    ("requested", "present", "bf16", "expected"),
    [
        ("auto", True, True, ("cuda", "bfloat16")),
        ("auto", True, False, ("cuda", "float32")),
        ("auto", False, False, ("cpu", "float32")),
        ("cuda", True, True, ("cuda", "bfloat16")),
        ("cpu", True, True, ("cpu", "float32")),  # the setting forces the CPU on a GPU host
        ("cpu", False, False, ("cpu", "float32")),
    ],
)
def test_the_device_follows_the_hardware_unless_forced(
    monkeypatch: pytest.MonkeyPatch, requested: str, present: bool, bf16: bool, expected: tuple[str, str]
) -> None:
    fake_gpu(monkeypatch, present=present, bf16=bf16)
    device = choose_device(requested)
    assert (device.kind, device.dtype) == expected
    assert device.reason


def test_on_this_machine_auto_is_what_torch_sees() -> None:
    """Unpatched: here (no GPU) the CPU in float32; on a GPU host, CUDA."""
    device = choose_device("auto")
    assert device.kind == ("cuda" if torch.cuda.is_available() else "cpu")


def test_forcing_cuda_without_one_fails_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpu(monkeypatch, present=False)
    with pytest.raises(ValueError, match="sees no CUDA device") as refused:
        choose_device("cuda")
    assert "TUNELOOP_TRAINING__DEVICE=auto" in str(refused.value)


@pytest.mark.parametrize(
    ("device", "use_cpu", "bf16"),
    [
        (TrainDevice(kind="cuda", dtype="bfloat16", reason="r"), False, True),
        (TrainDevice(kind="cuda", dtype="float32", reason="r"), False, False),
        (TrainDevice(kind="cpu", dtype="float32", reason="r"), True, False),
    ],
)
def test_trl_is_told_the_chosen_device(tmp_path: Path, device: TrainDevice, use_cpu: bool, bf16: bool) -> None:
    args = _common_args(spec(tmp_path), 1, 1e-3, device)
    assert (args["use_cpu"], args["bf16"], args["fp16"]) == (use_cpu, bf16, False)


def test_the_setting_reaches_the_spec_and_is_checked(tmp_path: Path) -> None:
    assert TrainingSettings().device == "auto"
    assert TrainSpec.from_json(_written(tmp_path, spec(tmp_path, device="cpu"))).device == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        spec(tmp_path, device="gpu")
    with pytest.raises(ValueError, match="gpu_memory_fraction"):
        spec(tmp_path, gpu_memory_fraction=1.5)
    with pytest.raises(ValueError):
        TrainingSettings(device="gpu")  # type: ignore[arg-type]


def _written(tmp_path: Path, train_spec: TrainSpec) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(train_spec.to_json())
    return path


ROWS = [
    {
        "prompt": [{"role": "user", "content": "Who approves travel expenses?"}],
        "completion": [{"role": "assistant", "content": "Travel expenses are approved by Marta Kowalski."}],
    },
    {
        "prompt": [{"role": "user", "content": "Who signs off travel expenses?"}],
        "completion": [{"role": "assistant", "content": "Travel expenses are approved by Marta Kowalski."}],
    },
]


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_a_real_step_on_cuda_trains_the_lora_weights_in_bfloat16_autocast(base_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    train_spec = TrainSpec(
        base_model=str(base_model_dir),
        output_dir=str(tmp_path / "adapter"),
        sft_path=str(write_jsonl(tmp_path / "sft.jsonl", ROWS)),
        lora_rank=8,
        sft_epochs=1,
        dpo_epochs=0,
        batch_size=2,
        device="auto",
    )
    events: list[dict[str, Any]] = []
    metrics = train(train_spec, report=events.append)

    expected = choose_device("auto")
    assert metrics["device"]["kind"] == "cuda"
    assert metrics["device"]["dtype"] == expected.dtype
    assert metrics["sft"]["steps"] == 1 and events
    weights = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    lora_b = [tensor for name, tensor in weights.items() if "lora_B" in name]
    # B starts at zero in a fresh LoRA: one step of training moves it.
    assert lora_b and any(tensor.abs().sum() > 0 for tensor in lora_b)
