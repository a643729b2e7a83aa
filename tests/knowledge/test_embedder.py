"""Embedder conformance: the same assertions for the real MiniLM and the hashing fake."""

from __future__ import annotations

import math

import pytest

from pipewarden.knowledge.embedder import HashEmbedder
from pipewarden.ports import Embedder


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.fixture(params=["hash", "minilm"])
def embedder(request: pytest.FixtureRequest) -> Embedder:
    if request.param == "hash":
        return HashEmbedder()
    return request.getfixturevalue("minilm")


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
