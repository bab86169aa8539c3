"""Where the settings meet the trainer: one TrainSpec from `training.*`, for every cycle and every runner."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from training.trainer import TrainSpec
from tuneloop.settings import Settings, TrainingSettings

# Run-specific fields (files and folders), which no setting sets; everything else of TrainSpec that
# TrainingSettings also has is passed on by name.
_PER_RUN = frozenset({"base_model", "output_dir", "sft_path", "dpo_path", "init_adapter"})


def shared_knobs() -> tuple[str, ...]:
    """TrainSpec fields that TrainingSettings sets (the same name means the same knob)."""
    spec_fields = {f.name for f in dataclasses.fields(TrainSpec)} - _PER_RUN
    return tuple(sorted(spec_fields & set(TrainingSettings.model_fields)))


def train_spec(
    settings: Settings, *, sft_path: Path, dpo_path: Path | None, output_dir: Path, init_adapter: str | None
) -> TrainSpec:
    knobs = {name: getattr(settings.training, name) for name in shared_knobs()}
    # vLLM refuses adapters above its --max-lora-rank: the served limit caps the trained rank.
    knobs["lora_rank"] = min(settings.training.lora_rank, settings.serving.max_lora_rank)
    return TrainSpec(
        base_model=str(settings.base_model_dir.resolve()),
        output_dir=str(output_dir.resolve()),
        sft_path=str(sft_path.resolve()),
        dpo_path=str(dpo_path.resolve()) if dpo_path else None,
        init_adapter=init_adapter,
        **knobs,
    )


def trainer_processes(settings: Settings) -> int:
    """How many training processes a cycle starts: one per GPU it may use (`training.gpus`), one on the CPU."""
    if settings.training.device == "cpu":
        return 1
    import torch  # only here: the service imports it anyway for the embedder; this module stays light

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible == 0:
        return 1
    wanted = settings.training.gpus
    return visible if wanted is None else max(1, min(wanted, visible))
