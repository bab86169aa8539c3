"""The environment a child process we start (the trainer, vLLM) may see: an allowlist, not the parent's whole.

The service's environment holds the Slack tokens, the database URL and password and every TUNELOOP_
setting; a child that runs model code needs none of them. Only what Python, the ML libraries and the
accelerator runtimes read is passed on, plus what the caller adds.

It lives in training, beside the trainer's own child process, because serving may import training (only
training -> serving and bot -> training are forbidden) while training may not import serving.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Exact names.
_NAMES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
        "VIRTUAL_ENV", "LD_LIBRARY_PATH", "LD_PRELOAD", "LIBRARY_PATH", "CC", "CXX",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "TOKENIZERS_PARALLELISM",
    }
)  # fmt: skip
# Prefixes: locale, Python, Hugging Face, PyTorch and its compilers, thread pools, vLLM, accelerators.
_PREFIXES = (
    "LC_", "PYTHON", "XDG_", "HF_", "TRANSFORMERS_", "TQDM_", "ACCELERATE_",
    "TORCH", "PYTORCH_", "TRITON_", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "NUMBA_",
    "VLLM_", "CUDA_", "NVIDIA_", "NCCL_", "CUBLAS_", "CUDNN_", "HIP_", "ROCM_", "ROCR_", "HSA_",
)  # fmt: skip


def is_passed_to_children(name: str) -> bool:
    return name in _NAMES or name.startswith(_PREFIXES)


def child_environment(
    extra: Mapping[str, str] | None = None, *, source: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The allowed variables of `source` (default: this process's environment), then `extra` on top."""
    environ = os.environ if source is None else source
    env = {name: value for name, value in environ.items() if is_passed_to_children(name)}
    env.update(extra or {})
    return env
