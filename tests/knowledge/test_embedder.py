"""Embedder conformance: the same assertions for the real MiniLM and the hashing fake."""

from __future__ import annotations

import math

import pytest

from pipewarden.knowledge.embedder import CachedEmbedder, HashEmbedder
from pipewarden.ports import Embedder


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.fixture(params=["hash", "minilm", "cached-minilm"])
def embedder(request: pytest.FixtureRequest, tmp_path) -> Embedder:  # type: ignore[no-untyped-def]
    if request.param == "hash":
        return HashEmbedder()
    minilm = request.getfixturevalue("minilm")
    if request.param == "cached-minilm":
        return CachedEmbedder(tmp_path / "cache", load=lambda: minilm)
    return minilm


def test_is_an_embedder_with_its_dimension(embedder: Embedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.name
    vectors = embedder.embed(["dep_delay", "Departure delay in minutes", ""])
    assert len(vectors) == 3
    assert all(len(v) == embedder.dim for v in vectors)
    assert embedder.embed([]) == []


def test_vectors_have_unit_length(embedder: Embedder) -> None:
    for v in embedder.embed(["tailnum", "Plane tail number (see planes).", "x" * 2000]):
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-4)


def test_is_deterministic_and_order_preserving(embedder: Embedder) -> None:
    a = embedder.embed(["carrier", "origin airport"])
    b = embedder.embed(["origin airport", "carrier"])
    assert a[0] == pytest.approx(b[1], abs=1e-5)
    assert a[1] == pytest.approx(b[0], abs=1e-5)


def test_similar_names_are_closer_than_unrelated_ones(embedder: Embedder) -> None:
    dep, camel, tail = embedder.embed(["dep_delay", "departureDelay", "tailnum"])
    assert _cos(dep, camel) > _cos(dep, tail)


def test_hash_embedder_dimension_is_configurable_and_stable_across_instances() -> None:
    small = HashEmbedder(dim=64)
    assert small.dim == 64 and len(small.embed(["a"])[0]) == 64
    assert HashEmbedder(dim=64).embed(["dep_delay"]) == small.embed(["dep_delay"])
    assert small.name != HashEmbedder().name


def test_identifiers_are_split_into_words_before_embedding() -> None:
    from pipewarden.knowledge.embedder import split_identifiers

    assert split_identifiers("dep_delay vs departureDelay, HTTPServer") == "dep delay vs departure Delay, HTTP Server"
    assert split_identifiers("a plain sentence_ stays _as_ is") == "a plain sentence_ stays _as_ is"


class _Loads:
    """Counts how often the cache loads its model (a hashing fake here)."""

    def __init__(self) -> None:
        self.loads = 0
        self.texts: list[str] = []

    def __call__(self) -> Embedder:
        self.loads += 1
        inner = HashEmbedder()
        seen = self.texts

        class Counting:
            name, dim = inner.name, inner.dim

            def embed(self, texts: list[str]) -> list[list[float]]:
                seen.extend(texts)
                return inner.embed(texts)

        return Counting()


def test_the_cache_gives_back_the_vectors_it_stored_without_loading_the_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    loads = _Loads()
    first = CachedEmbedder(tmp_path, load=loads).embed(["departure delay", "tail number", "departure delay"])
    assert loads.loads == 1 and sorted(loads.texts) == ["departure delay", "tail number"]  # each text once
    want = [[float(x) for x in np.float32(v)] for v in HashEmbedder().embed(["departure delay", "tail number"])]
    assert first == [want[0], want[1], want[0]]  # the vectors as float32, what MiniLM returns
    again = CachedEmbedder(tmp_path, load=loads)  # another process, the same folder
    assert again.embed(["tail number", "departure delay"]) == [want[1], want[0]]
    assert loads.loads == 1  # no model loaded for texts it has seen
    assert again.embed(["carrier", "tail number"])[1] == want[1] and loads.texts[-1:] == ["carrier"]
    assert again.embed([]) == []


def test_a_broken_cache_file_is_embedded_again_and_an_unwritable_folder_only_costs_the_cache(tmp_path) -> None:  # type: ignore[no-untyped-def]
    loads = _Loads()
    cache = CachedEmbedder(tmp_path / "c", load=loads)
    [v] = cache.embed(["origin"])
    cache._file("origin").write_bytes(b"\x00" * 10)  # a torn write from elsewhere
    assert cache.embed(["origin"]) == [v] and loads.texts == ["origin", "origin"]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert CachedEmbedder(blocker / "cache", load=loads).embed(["origin"]) == [v]


def test_the_cache_key_follows_the_model_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"one")
    a = CachedEmbedder(tmp_path / "c", load=_Loads(), model_path=str(model))._file("x")
    (model / "model.safetensors").write_bytes(b"other")  # another model (size differs)
    assert CachedEmbedder(tmp_path / "c", load=_Loads(), model_path=str(model))._file("x") != a


def test_the_cached_embedder_gives_minilm_s_vectors(minilm: Embedder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    texts = ["departure delay", "dep_delay", "tailnum", "ça coûte 5 €"]
    want = minilm.embed(texts)
    cold = CachedEmbedder(tmp_path, load=lambda: minilm).embed(texts)
    warm = CachedEmbedder(tmp_path, load=lambda: pytest.fail("loaded the model on a hit")).embed(texts)
    assert cold == want and warm == want
