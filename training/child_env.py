"""How a child process we start (the trainer, vLLM) is set up: what environment it sees, and that it dies with us.

The service's environment holds the Slack tokens, the database URL and password and every TUNELOOP_
setting; a child that runs model code needs none of them. Only what Python, the ML libraries and the
accelerator runtimes read is passed on, plus what the caller adds.

A child outlives a service that is killed hard (SIGKILL, the OOM killer) unless the kernel is told otherwise:
`die_with_parent` asks Linux for a signal to the child when its parent goes (PR_SET_PDEATHSIG).

It lives in training, beside the trainer's own child process, because serving may import training (only
training -> serving and bot -> training are forbidden) while training may not import serving.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Mapping

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


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Looked up once, in the parent: after fork only async-signal-safe work belongs in the child.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that has the child sent `sig` when the process starting it dies; None where Linux's is missing.

    The kernel sends it when the *thread* that forked the child ends: start children from a thread that lives
    as long as the service (its event loop's), not from a worker thread.
    """
    if _prctl is None:
        return None
    prctl = _prctl
    parent = os.getpid()

    def in_child() -> None:
        if prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the request was in place
            os.kill(os.getpid(), sig)

    return in_child
