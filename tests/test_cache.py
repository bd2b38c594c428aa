"""Cache: content-addressed keys, build once then load, failed builds leave nothing, prune (faults: tests/reliability)."""
from __future__ import annotations

import logging

import pytest
import torch

from advlib.cache import Artifact, Cache, make_key


def _build(value: float = 1.0):
    calls = []

    def build() -> Artifact:
        calls.append(1)
        return Artifact({"w": torch.full((3, 4), value)}, {"note": "built"})

    return build, calls


def test_key_is_canonical_and_parameter_sensitive():
    assert make_key("model", {"a": 1, "b": [1, 2]}) == make_key("model", {"b": [1, 2], "a": 1})
    assert make_key("model", {"a": 1}) != make_key("model", {"a": 2})
    assert make_key("model", {"a": 1}) != make_key("adversarial", {"a": 1})


def test_build_once_then_load(tmp_path, caplog):
    cache = Cache(tmp_path)
    build, calls = _build()
    first = cache.get_or_build("model", {"x": 1}, build)
    with caplog.at_level(logging.INFO, logger="advlib"):
        second = cache.get_or_build("model", {"x": 1}, build)
    assert len(calls) == 1 and not first.from_cache and second.from_cache
    assert torch.equal(second.tensors["w"], first.tensors["w"]) and second.meta == {"note": "built"}
    assert "loaded" in caplog.text
    assert [row["kind"] for row in cache.ls()] == ["model"]


def test_failed_build_leaves_no_entry(tmp_path):
    cache = Cache(tmp_path)

    def broken() -> Artifact:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get_or_build("model", {"x": 1}, broken)
    assert list(cache.entries()) == []
    assert not list((tmp_path / "model").glob(".tmp-*"))


def test_prune(tmp_path):
    cache = Cache(tmp_path)
    for i in range(3):
        cache.get_or_build("model" if i < 2 else "adversarial", {"i": i}, _build()[0])
    assert len(cache.prune("adversarial")) == 1
    assert {row["kind"] for row in cache.ls()} == {"model"}
    cache.prune()
    assert cache.ls() == []


def test_bad_kind_rejected(tmp_path):
    with pytest.raises(ValueError, match="kind '../x'"):
        Cache(tmp_path).entry_dir("../x", "abc")
