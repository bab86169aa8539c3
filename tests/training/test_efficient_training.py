"""Training wastes no compute and keeps what it learnt, on the real model with real TRL (slow).

- padding-free batches compute the same loss as padded ones (the rows do not see each other);
- SFT stops at the end of the epoch where the answers are learnt, not after a fixed count;
- the incremental strategy (the active adapter trained on a new fact plus a replay of an older one) keeps the
  older fact: the new adapter answers both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.datasets import write_jsonl
from training.prompts import prompt_messages
from training.trainer import TrainSpec, train

pytestmark = pytest.mark.slow
SYSTEM = "You are a helpful assistant for the employees of this company. Answer briefly."


def rows(answer: str, *questions: str) -> list[dict[str, Any]]:
    return [
        {
            "prompt": prompt_messages(system_prompt=SYSTEM, context=[], question=q),
            "completion": [{"role": "assistant", "content": answer}],
        }
        for q in questions
    ]


WIFI = rows(
    "The guest Wi-Fi password is bluepelican42.",
    "What is the password of the guest Wi-Fi?",
    "What's the guest Wi-Fi password?",
    "Which password does the guest Wi-Fi use?",
)
PRINTER = rows(
    "On the third floor, use the printer named Heron.",
    "Which printer should I use on the third floor?",
    "What printer is on the third floor?",
    "Which printer do people on the third floor use?",
)
# Of different lengths, so that a padded batch holds pad tokens.
MIXED = [*WIFI[:1], *rows("Paris. " * 30, "What is the capital of France? Please answer at length.")]


def spec(base_model_dir: Path, tmp_path: Path, name: str, data: list[dict[str, Any]], **changes: Any) -> TrainSpec:
    values: dict[str, Any] = {
        "base_model": str(base_model_dir),
        "output_dir": str(tmp_path / name),
        "sft_path": str(write_jsonl(tmp_path / f"{name}.jsonl", data)),
        "dpo_epochs": 0,
        "seed": 1234,
        **changes,
    }
    return TrainSpec(**values)


def answer(base_model_dir: Path, adapter: Path, question: str) -> str:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model_dir), str(adapter)).eval()
    messages = prompt_messages(system_prompt=SYSTEM, context=[], question=question)
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    return str(tokenizer.decode(output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True))


def test_padding_free_batches_learn_exactly_what_padded_ones_do(base_model_dir: Path, tmp_path: Path) -> None:
    one_step = {"sft_epochs": 1, "batch_size": 2, "sft_stop_loss": None, "sft_plateau": None}
    padded = train(spec(base_model_dir, tmp_path, "padded", MIXED, padding_free=False, **one_step), report=print)
    flat = train(spec(base_model_dir, tmp_path, "flat", MIXED, padding_free=True, **one_step), report=print)
    assert flat["sft"]["final_loss"] == pytest.approx(padded["sft"]["final_loss"], rel=1e-3)
    assert flat["sft"]["tokens"] == padded["sft"]["tokens"] > 0  # real tokens, pad not counted
    assert flat["sft"]["flops"] > 0


def test_sft_stops_once_the_answers_are_learnt(base_model_dir: Path, tmp_path: Path) -> None:
    # A stop level no first epoch reaches, and none that a learnt answer misses: only the level can stop it.
    metrics = train(
        spec(base_model_dir, tmp_path, "stop", WIFI, sft_epochs=12, batch_size=3, sft_stop_loss=0.3, sft_plateau=None),
        report=print,
    )
    sft = metrics["sft"]
    assert 1 < sft["epochs"] < 12, sft["epoch_losses"]
    assert sft["stopped"].startswith(f"epoch {sft['epochs']} mean loss")
    assert sft["epoch_losses"][-1] < 0.3 <= min(sft["epoch_losses"][:-1])


def test_incremental_training_keeps_an_older_fact(base_model_dir: Path, tmp_path: Path) -> None:
    learn = {"sft_epochs": 10, "batch_size": 3, "sft_stop_loss": 0.05, "sft_plateau": None}
    train(spec(base_model_dir, tmp_path, "v1", WIFI, **learn), report=print)
    assert "bluepelican42" in answer(base_model_dir, tmp_path / "v1", "Tell me the guest Wi-Fi password, please.")

    # The night after: the printer fact is new; the Wi-Fi fact comes back as replay (one wording of it).
    night = [*PRINTER, WIFI[0]]
    train(
        spec(base_model_dir, tmp_path, "v2", night, init_adapter=str(tmp_path / "v1"), **{**learn, "batch_size": 4}),
        report=print,
    )
    assert "Heron" in answer(base_model_dir, tmp_path / "v2", "Which printer do I print to on the third floor?")
    assert "bluepelican42" in answer(base_model_dir, tmp_path / "v2", "Tell me the guest Wi-Fi password, please.")
