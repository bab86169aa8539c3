"""The TRL worker's `continue` path on the real model: an existing adapter trained further, not replaced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.datasets import write_jsonl
from training.trainer import TrainSpec, train

pytestmark = pytest.mark.slow

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


def lora_weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_continuing_an_adapter_keeps_its_shape_and_changes_its_weights(
    base_model_dir: Path, adapter_dirs: list[Path], tmp_path: Path
) -> None:
    import torch

    start = adapter_dirs[0]
    before = lora_weights(start)
    spec = TrainSpec(
        base_model=str(base_model_dir),
        output_dir=str(tmp_path / "continued"),
        sft_path=str(write_jsonl(tmp_path / "sft.jsonl", ROWS)),
        init_adapter=str(start),
        lora_rank=16,  # ignored: the adapter being continued has rank 8, and its rank wins
        sft_epochs=1,
        dpo_epochs=0,
        batch_size=2,
    )
    events: list[dict[str, Any]] = []

    metrics = train(spec, report=events.append)

    assert metrics["sft"]["steps"] == 1
    assert events  # progress was reported
    config = json.loads((tmp_path / "continued" / "adapter_config.json").read_text())
    assert config["r"] == 8
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    after = lora_weights(tmp_path / "continued")
    assert after.keys() == before.keys()
    assert any(not torch.equal(before[name], after[name]) for name in before)  # trained further
    assert all(torch.equal(before[name], lora_weights(start)[name]) for name in before)  # the start is untouched
