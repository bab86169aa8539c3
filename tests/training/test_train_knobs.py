"""The trainer's stopping rule and the one mapping from settings to TrainSpec (no training here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from training.trainer import TrainSpec, epoch_losses, plateau_reason
from tuneloop.settings import Settings, TrainingSettings
from tuneloop.train_spec import shared_knobs, train_spec


def test_epoch_losses_average_the_steps_of_each_epoch() -> None:
    history = [
        {"loss": 3.0, "epoch": 0.5},
        {"loss": 1.0, "epoch": 1.0},  # the last step of epoch 1
        {"loss": 0.5, "epoch": 1.5},
        {"loss": 0.3, "epoch": 2.0},
        {"train_loss": 9.9, "epoch": 2.0},  # the summary line is not a step
    ]
    assert epoch_losses(history) == pytest.approx([2.0, 0.4])


@pytest.mark.parametrize(
    ("losses", "stops"),
    [
        ([], False),
        ([2.0], False),  # one epoch: nothing to compare with, and not learnt yet
        ([0.05], True),  # learnt in one epoch
        ([2.0, 1.0], False),  # halved: still learning
        ([1.0, 0.95], True),  # 5% better: a plateau
        ([1.0, 1.2], True),  # worse
    ],
)
def test_sft_stops_when_learnt_or_on_a_plateau(losses: list[float], stops: bool) -> None:
    reason = plateau_reason(losses, stop_loss=0.1, plateau=0.15)
    assert (reason is not None) == stops


def test_no_rule_never_stops() -> None:
    assert plateau_reason([1.0, 1.0, 0.0], stop_loss=None, plateau=None) is None


def test_the_settings_defaults_are_the_trainers() -> None:
    spec_defaults = {f.name: f.default for f in dataclasses.fields(TrainSpec)}
    settings = TrainingSettings()
    drifted = {
        name: (getattr(settings, name), spec_defaults[name])
        for name in shared_knobs()
        if name not in ("seed", "cpu_threads") and getattr(settings, name) != spec_defaults[name]
    }
    assert drifted == {}


def test_every_shared_setting_reaches_the_spec(tmp_path: Path) -> None:
    changed = {
        "sft_epochs": 3,
        "sft_stop_loss": 0.2,
        "sft_plateau": 0.2,
        "padding_free": False,
        "cpu_threads": 1,
        "dpo_beta": 0.3,
        "batch_size": 4,
        "lora_rank": 8,
        "seed": 7,
    }
    settings = Settings(data_dir=tmp_path, training=changed)
    spec = train_spec(
        settings, sft_path=tmp_path / "sft.jsonl", dpo_path=None, output_dir=tmp_path / "out", init_adapter=None
    )
    assert {name: getattr(spec, name) for name in changed} == changed
    assert set(changed) <= set(shared_knobs())


def test_the_served_rank_caps_the_trained_rank(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, training={"lora_rank": 64}, serving={"max_lora_rank": 16})
    spec = train_spec(
        settings, sft_path=tmp_path / "sft.jsonl", dpo_path=None, output_dir=tmp_path / "out", init_adapter=None
    )
    assert spec.lora_rank == 16
