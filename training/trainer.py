"""One training run: SFT (and optionally DPO) of a LoRA adapter with TRL, on CUDA when there is one.

The device follows the hardware (`choose_device`): CUDA with bfloat16 where torch sees a GPU that supports it,
else the CPU in float32; `TrainSpec.device` (the `training.device` setting) forces either.

Heavy libraries are imported inside the functions so that importing this module (for `TrainSpec`)
stays cheap for the bot and the scheduler.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Report = Callable[[dict[str, Any]], None]

# Attention and MLP projections of Llama-style models (SmolLM2). Embeddings and lm_head are never
# trained: vLLM refuses adapters with modules_to_save.
DEFAULT_TARGET_MODULES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
_FORBIDDEN_MODULES = frozenset({"embed_tokens", "lm_head", "wte", "wpe"})
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass(kw_only=True)
class TrainSpec:
    """Everything one training run needs; serialised to JSON for the worker process."""

    base_model: str = field(metadata={"help": "Path of the base model folder (Hugging Face format)."})
    output_dir: str = field(metadata={"help": "Folder that receives the final adapter."})
    sft_path: str = field(metadata={"help": "JSONL of conversational prompt/completion rows for SFT."})
    dpo_path: str | None = field(
        default=None,
        metadata={"help": "JSONL of conversational prompt/chosen/rejected rows for DPO; None skips DPO."},
    )
    init_adapter: str | None = field(
        default=None,
        metadata={"help": "Existing adapter to continue training instead of a fresh LoRA (its rank wins)."},
    )
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank r (vLLM's --max-lora-rank caps it)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha; the update is scaled by alpha / r."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input, in [0, 1)."})
    target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        metadata={"help": "Linear modules that get LoRA weights (never embeddings or lm_head)."},
    )
    sft_epochs: int = field(
        default=8, metadata={"help": "The most epochs of SFT; training stops earlier on a loss plateau (see below)."}
    )
    sft_stop_loss: float | None = field(
        # Off by default. bench/cycle.py: stopping below 0.1 (3 epochs) lost 9 points of recall on unseen wordings,
        # 0.03 (4 epochs) kept it on 36 wordings, yet then the e2e loop test's "business trip expense" wording lost
        # its fact, which 8 epochs teach. Until more wordings say a stop is safe, SFT runs its epochs.
        default=None,
        metadata={
            "help": "Stop SFT after the first epoch whose mean loss is below this (the answers are learnt); None: "
            "never stop on the loss's level."
        },
    )
    sft_plateau: float | None = field(
        default=None,
        metadata={
            "help": "Stop SFT after an epoch that lowered the mean loss by less than this share of the previous "
            "epoch's; None: never stop on a plateau."
        },
    )
    padding_free: bool = field(
        default=True,
        metadata={
            "help": "Flatten each batch into one sequence (no pad tokens are computed); the attention mask keeps "
            "the rows apart."
        },
    )
    cpu_threads: int | None = field(
        default=None,
        metadata={"help": "Threads the CPU trainer uses; None: every core (torch's default)."},
    )
    sft_learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate of SFT."})
    dpo_epochs: int = field(default=2, metadata={"help": "Epochs of DPO; 0 skips DPO."})
    dpo_learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate of DPO."})
    dpo_beta: float = field(default=0.1, metadata={"help": "DPO beta: strength of the KL anchor."})
    batch_size: int = field(default=8, metadata={"help": "Per-device train batch size (SFT and DPO)."})
    seed: int = field(default=42, metadata={"help": "Random seed for LoRA init and data order."})
    device: str = field(
        default="auto",
        metadata={
            "help": "auto: CUDA (bfloat16 where supported) when torch sees a GPU, else CPU float32; cpu or cuda "
            "force it (cuda fails when there is none)."
        },
    )
    gpu_memory_fraction: float | None = field(
        default=None,
        metadata={
            "help": "The most of the GPU's memory this process may allocate, in (0, 1]; None: no cap. Leave "
            "vLLM its --gpu-memory-utilization share."
        },
    )

    def __post_init__(self) -> None:
        if not self.base_model:
            raise ValueError("base_model must be set")
        if not self.output_dir:
            raise ValueError("output_dir must be set")
        if not self.sft_path:
            raise ValueError("sft_path must be set")
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {self.lora_rank}")
        if self.lora_alpha < 1:
            raise ValueError(f"lora_alpha must be >= 1, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.target_modules:
            raise ValueError("target_modules must not be empty")
        bad = _FORBIDDEN_MODULES.intersection(self.target_modules)
        if bad:
            raise ValueError(f"target_modules must not include {sorted(bad)}: vLLM refuses such adapters")
        if self.sft_epochs < 1:
            raise ValueError(f"sft_epochs must be >= 1, got {self.sft_epochs}")
        if self.sft_stop_loss is not None and not (self.sft_stop_loss >= 0 and math.isfinite(self.sft_stop_loss)):
            raise ValueError(f"sft_stop_loss must be a number >= 0 or None, got {self.sft_stop_loss}")
        if self.sft_plateau is not None and not 0 <= self.sft_plateau < 1:
            raise ValueError(f"sft_plateau must be in [0, 1) or None, got {self.sft_plateau}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be >= 1 or None, got {self.cpu_threads}")
        if self.dpo_epochs < 0:
            raise ValueError(f"dpo_epochs must be >= 0, got {self.dpo_epochs}")
        for name in ("sft_learning_rate", "dpo_learning_rate", "dpo_beta"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.device not in DEVICE_CHOICES:
            raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {self.device!r}")
        if self.gpu_memory_fraction is not None and not 0 < self.gpu_memory_fraction <= 1:
            raise ValueError(f"gpu_memory_fraction must be in (0, 1], got {self.gpu_memory_fraction}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainSpec:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class TrainDevice:
    """Where one run trains, in what precision, and why."""

    kind: Literal["cpu", "cuda"]
    dtype: Literal["float32", "bfloat16"]
    reason: str


def choose_device(requested: str) -> TrainDevice:
    """CUDA with bfloat16 when torch sees a GPU that supports it, else the CPU in float32; `requested` forces one."""
    import torch

    if requested == "cpu":
        return TrainDevice(kind="cpu", dtype="float32", reason="training.device=cpu")
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise ValueError(
            f"training.device is cuda, but torch {torch.__version__} sees no CUDA device: check the GPU is visible "
            "(nvidia-smi, CUDA_VISIBLE_DEVICES) and torch is a CUDA build, or set TUNELOOP_TRAINING__DEVICE=auto"
        )
    if not cuda:
        return TrainDevice(kind="cpu", dtype="float32", reason="no CUDA device")
    if torch.cuda.is_bf16_supported():
        return TrainDevice(kind="cuda", dtype="bfloat16", reason="CUDA with bfloat16")
    # Older GPUs (before Ampere): float32, which fp16's narrow range cannot break.
    return TrainDevice(kind="cuda", dtype="float32", reason="CUDA without bfloat16 support")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object")
            rows.append(row)
    return rows


def _check_rows(rows: list[dict[str, Any]], columns: tuple[str, ...], path: str) -> None:
    for number, row in enumerate(rows, start=1):
        for column in columns:
            messages = row.get(column)
            if not isinstance(messages, list) or not messages:
                raise ValueError(f"{path}: row {number} needs a non-empty message list in {column!r}")


def verify_adapter(path: str | Path) -> None:
    """Raise ValueError unless `path` holds a LoRA adapter that vLLM can load."""
    folder = Path(path)
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        raise ValueError(f"{folder}: adapter_config.json is missing")
    if not any((folder / name).is_file() for name in _ADAPTER_WEIGHTS):
        raise ValueError(f"{folder}: adapter weights are missing")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{folder}: adapter_config.json is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{folder}: adapter_config.json is not an object")
    if config.get("modules_to_save"):
        raise ValueError(f"{folder}: adapter has modules_to_save, which vLLM refuses")


def _progress_callback(stage: str, report: Report) -> Any:
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self._started = time.monotonic()
            self._last_step = -1

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._started = time.monotonic()

        def _emit(self, state: Any, loss: float | None) -> None:
            step, total = int(state.global_step), int(state.max_steps)
            elapsed = time.monotonic() - self._started
            eta = elapsed / step * (total - step) if step > 0 else None
            report(
                {
                    "event": "progress",
                    "stage": stage,
                    "step": step,
                    "total": total,
                    "loss": loss,
                    "eta_s": None if eta is None else round(eta, 1),
                }
            )
            self._last_step = step

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            loss = (logs or {}).get("loss")
            # The final summary log (train_loss) repeats the last step: skip it.
            if loss is None and state.global_step == self._last_step:
                return
            self._emit(state, None if loss is None else float(loss))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # logging_steps=1 normally logs every step; this covers steps that did not.
            if not control.should_log:
                self._emit(state, None)

    return ProgressCallback()


def epoch_losses(history: list[dict[str, Any]]) -> list[float]:
    """The mean logged training loss of each finished epoch, in order."""
    by_epoch: dict[int, list[float]] = {}
    for entry in history:
        if "loss" in entry and "epoch" in entry:
            # Trainer logs fractional epochs: a step logged at 1.0 ended epoch 1, one at 1.07 is in epoch 2.
            by_epoch.setdefault(max(1, math.ceil(float(entry["epoch"]) - 1e-9)), []).append(float(entry["loss"]))
    return [sum(values) / len(values) for _, values in sorted(by_epoch.items())]


def plateau_reason(losses: list[float], *, stop_loss: float | None, plateau: float | None) -> str | None:
    """Why SFT should stop after the last of these epoch losses, or None to go on."""
    if not losses:
        return None
    last = losses[-1]
    if stop_loss is not None and last < stop_loss:
        return f"epoch {len(losses)} mean loss {last:.3f} < {stop_loss}"
    if plateau is not None and len(losses) >= 2 and losses[-2] > 0:
        gain = (losses[-2] - last) / losses[-2]
        if gain < plateau:
            return f"epoch {len(losses)} lowered the mean loss by {gain:.0%} (< {plateau:.0%})"
    return None


def _plateau_callback(spec: TrainSpec, stopped: list[str]) -> Any:
    """Ends SFT at the end of an epoch when `plateau_reason` says so; the reason is appended to `stopped`."""
    from transformers import TrainerCallback

    class PlateauCallback(TrainerCallback):  # type: ignore[misc]
        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            reason = plateau_reason(
                epoch_losses(state.log_history), stop_loss=spec.sft_stop_loss, plateau=spec.sft_plateau
            )
            if reason is not None and not stopped:
                stopped.append(reason)
                control.should_training_stop = True

    return PlateauCallback()


def _common_args(spec: TrainSpec, epochs: int, learning_rate: float, device: TrainDevice) -> dict[str, Any]:
    return {
        "output_dir": spec.output_dir,
        "num_train_epochs": epochs,
        "learning_rate": learning_rate,
        "per_device_train_batch_size": spec.batch_size,
        "gradient_accumulation_steps": 1,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "seed": spec.seed,
        "data_seed": spec.seed,
        "use_cpu": device.kind == "cpu",
        "bf16": device.dtype == "bfloat16",
        "fp16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1,
        "logging_strategy": "steps",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "dataset_num_proc": None,
    }


def _last_logged(history: list[dict[str, Any]], key: str) -> float | None:
    for entry in reversed(history):
        if key in entry:
            return float(entry[key])
    return None


# A run's loss curve is kept in its record for the dashboard's plot: at most this many points, evenly spread.
MAX_CURVE_POINTS = 200


def loss_curve(history: list[dict[str, Any]], *, max_points: int = MAX_CURVE_POINTS) -> list[list[float]]:
    """[[step, loss], ...] from a trainer's log history, thinned to `max_points` (the last step always kept)."""
    points = [[float(entry["step"]), float(entry["loss"])] for entry in history if "loss" in entry and "step" in entry]
    if len(points) <= max_points:
        return points
    stride = len(points) / (max_points - 1)
    kept = [points[int(i * stride)] for i in range(max_points - 1)]
    return [*kept, points[-1]]


def _logged_tokens(history: list[dict[str, Any]]) -> int:
    """Tokens trained on, from the trainer's own count in its log (TRL logs `num_tokens`)."""
    return int(max((float(entry.get("num_tokens", 0)) for entry in history), default=0))


def lora_training_flops(model: Any, *, tokens: int) -> int:
    """Matmul FLOPs of LoRA training over `tokens`: 2 per weight per token forward, 2 more backward.

    The frozen base needs gradients for its activations (2 per weight per token) but none for its weights, so
    4·N·T, not the 6·N·T of full fine-tuning; the LoRA weights' own share is under 1% of N and left out.
    The input embeddings are a lookup, not a matmul: not counted. Attention's score matmuls are left out too
    (short rows: a few percent), so this is a lower bound.
    """
    embeddings = model.get_input_embeddings()
    embedding_weights = embeddings.weight.numel() if embeddings is not None else 0
    # Tied output head (SmolLM2): the lm_head matmul uses the embedding matrix, which counts once, as a matmul.
    weights = sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)
    tied = getattr(model.config, "tie_word_embeddings", False)
    matmul_weights = weights if tied else weights - embedding_weights
    return int(4 * matmul_weights * tokens)


def train(spec: TrainSpec, *, report: Report) -> dict[str, Any]:
    """Train the adapter described by `spec`, save it to `spec.output_dir` and return metrics."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    sft_rows = read_jsonl(spec.sft_path)
    if not sft_rows:
        raise ValueError(f"{spec.sft_path}: no SFT rows")
    _check_rows(sft_rows, ("prompt", "completion"), spec.sft_path)
    dpo_rows = read_jsonl(spec.dpo_path) if spec.dpo_path else []
    _check_rows(dpo_rows, ("prompt", "chosen", "rejected"), spec.dpo_path or "")

    device = choose_device(spec.device)
    if device.kind == "cpu" and spec.cpu_threads is not None:
        torch.set_num_threads(spec.cpu_threads)
    if device.kind == "cuda" and spec.gpu_memory_fraction is not None:
        torch.cuda.set_per_process_memory_fraction(spec.gpu_memory_fraction)
    torch.manual_seed(spec.seed)
    tokenizer = AutoTokenizer.from_pretrained(spec.base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The frozen base in the run's precision; PEFT keeps the LoRA weights in float32 (autocast_adapter_dtype).
    base = AutoModelForCausalLM.from_pretrained(spec.base_model, dtype=getattr(torch, device.dtype))

    if spec.init_adapter:
        verify_adapter(spec.init_adapter)
        model = PeftModel.from_pretrained(base, spec.init_adapter, is_trainable=True)
    else:
        lora = LoraConfig(
            r=spec.lora_rank,
            lora_alpha=spec.lora_alpha,
            lora_dropout=spec.lora_dropout,
            target_modules=list(spec.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, lora)

    started = time.monotonic()
    sft_args = SFTConfig(
        **_common_args(spec, spec.sft_epochs, spec.sft_learning_rate, device),
        # Padding-free rows are not cut (TRL refuses max_length there): prompts are already trimmed to the same
        # budget as serving's (training/prompts.py), so a row is never longer than a served conversation.
        max_length=None if spec.padding_free else 1024,
        packing=False,
        # transformers builds a block-diagonal mask from the rows' position ids (masking_utils'
        # find_packed_sequence_indices), so rows never attend to each other and no pad token is computed.
        padding_free=spec.padding_free,
        completion_only_loss=True,
    )
    stopped: list[str] = []
    sft = SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=Dataset.from_list(sft_rows),
        processing_class=tokenizer,
        callbacks=[_progress_callback("sft", report), _plateau_callback(spec, stopped)],
    )
    sft_result = sft.train()
    history = sft.state.log_history
    sft_seconds = time.monotonic() - started
    # Real tokens (TRL counts the attention mask, not the pad): the FLOPs padding wastes do not count as work.
    sft_tokens = _logged_tokens(history)
    metrics: dict[str, Any] = {
        "sft": {
            "rows": len(sft_rows),
            "steps": int(sft.state.global_step),
            "epochs": len(epoch_losses(history)),
            "max_epochs": spec.sft_epochs,
            "stopped": stopped[0] if stopped else "the most epochs",
            "epoch_losses": [round(loss, 4) for loss in epoch_losses(history)],
            "train_loss": float(sft_result.training_loss),
            "final_loss": _last_logged(history, "loss"),
            "losses": loss_curve(history),
            "tokens": sft_tokens,
            "flops": lora_training_flops(base, tokens=sft_tokens),
            "seconds": round(sft_seconds, 1),
        },
        "dpo": None,
        "device": {
            "kind": device.kind,
            "dtype": device.dtype,
            "reason": device.reason,
            "name": torch.cuda.get_device_name() if device.kind == "cuda" else "cpu",
        },
    }
    trained: Any = sft.model

    if dpo_rows and spec.dpo_epochs > 0:
        started = time.monotonic()
        dpo_args = DPOConfig(
            **_common_args(spec, spec.dpo_epochs, spec.dpo_learning_rate, device),
            beta=spec.dpo_beta,
            max_length=1024,
            # The reference (the base: the adapter switched off) never changes: score it once, not every epoch.
            precompute_ref_log_probs=True,
        )
        # A trainable PeftModel and no peft_config: DPO keeps training the SFT adapter.
        dpo = DPOTrainer(
            model=trained,
            args=dpo_args,
            train_dataset=Dataset.from_list(dpo_rows),
            processing_class=tokenizer,
            callbacks=[_progress_callback("dpo", report)],
        )
        dpo_result = dpo.train()
        history = dpo.state.log_history
        metrics["dpo"] = {
            "rows": len(dpo_rows),
            "steps": int(dpo.state.global_step),
            "train_loss": float(dpo_result.training_loss),
            "rewards/accuracies": _last_logged(history, "rewards/accuracies"),
            "rewards/margins": _last_logged(history, "rewards/margins"),
            "losses": loss_curve(history),
            "seconds": round(time.monotonic() - started, 1),
        }
        dpo.save_model(spec.output_dir)
    else:
        sft.save_model(spec.output_dir)

    if os.environ.get("RANK", "0") == "0":  # in a multi-GPU launch, only the main process saved it
        verify_adapter(spec.output_dir)
    return metrics
