"""Fold a LoRA adapter into the base model's weights (PEFT's merge), for an engine that serves it at base speed.

The merged folder is a plain Hugging Face model folder: the base folder's config and tokenizer files, and the
merged weights in safetensors. It is what vLLM's in-place `reload_weights` reads.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# Everything but the weights comes from the base folder unchanged.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def merge_adapter(*, base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Write base + adapter as one model into `out_dir` (replaced whole, through a temporary folder)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(partial, safe_serialization=True)
    for item in base_dir.iterdir():
        if item.is_file() and not item.name.endswith(_WEIGHT_SUFFIXES) and not (partial / item.name).exists():
            shutil.copy2(item, partial / item.name)
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    return out_dir
