"""Training worker process: `python -m training.worker SPEC_JSON_PATH`.

Prints one JSON object per line on stdout (progress events, then `done` or `error`); everything
else the libraries write goes to stderr so the parent can parse stdout line by line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

# Set before transformers/datasets/tqdm are imported: they read these at import time.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def is_main_process() -> bool:
    """Rank 0 of a multi-GPU launch (accelerate sets RANK), or the only process."""
    return os.environ.get("RANK", "0") == "0"


def _emitter(out: TextIO) -> Any:
    def emit(event: dict[str, Any]) -> None:
        if not is_main_process():
            return  # one progress stream and one result: the main process speaks for every rank
        out.write(json.dumps(event, default=str) + "\n")
        out.flush()

    return emit


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.worker", description=__doc__)
    parser.add_argument("spec", help="path of a TrainSpec JSON file")
    args = parser.parse_args(argv)

    # Keep the real stdout for our events; libraries that print get stderr instead.
    emit = _emitter(sys.stdout)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    warnings.simplefilter("default")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import torch

            from training.trainer import TrainSpec, train

            torch.set_num_threads(os.cpu_count() or 1)
            spec = TrainSpec.from_json(args.spec)
            metrics = train(spec, report=emit)
    except Exception as exc:
        emit({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 1
    emit({"event": "done", "metrics": metrics})
    return 0


if __name__ == "__main__":
    sys.exit(main())
