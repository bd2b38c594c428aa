"""Cache: content-addressed keys, atomic checksummed entries, corrupt entries rebuilt, concurrent builds safe."""
from __future__ import annotations

import logging
import multiprocessing as mp

import pytest
import torch

from advlib.cache import Artifact, Cache, CacheError, make_key


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


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_meta"])
def test_corrupt_entry_detected_and_rebuilt(tmp_path, damage, caplog):
    cache = Cache(tmp_path)
    build, calls = _build()
    cache.get_or_build("model", {"x": 1}, build)
    entry = cache.entry_dir("model", make_key("model", {"x": 1}))
    data = entry / "tensors.safetensors"
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[:20])
    elif damage == "flip":
        raw = bytearray(data.read_bytes())
        raw[-1] ^= 0xFF
        data.write_bytes(bytes(raw))
    else:
        (entry / "meta.json").unlink()
    assert [p for p, _ in cache.verify()] == [entry]
    with pytest.raises(CacheError):
        cache.read("model", make_key("model", {"x": 1}))
    with caplog.at_level(logging.WARNING, logger="advlib"):
        again = cache.get_or_build("model", {"x": 1}, build)
    assert len(calls) == 2 and "corrupt" in caplog.text and not again.from_cache
    assert cache.verify() == []


def test_failed_build_leaves_no_entry(tmp_path):
    cache = Cache(tmp_path)

    def broken() -> Artifact:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get_or_build("model", {"x": 1}, broken)
    assert list(cache.entries()) == []
    assert not list((tmp_path / "model").glob(".tmp-*"))


def test_failed_write_leaves_no_entry(tmp_path, monkeypatch):
    cache = Cache(tmp_path)
    import advlib.cache as cache_mod

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_mod, "save_file", full_disk)
    build, _ = _build()
    with pytest.raises(CacheError, match="No space left"):
        cache.get_or_build("model", {"x": 1}, build)
    assert list(cache.entries()) == [] and not list((tmp_path / "model").glob(".tmp-*"))


def _concurrent_worker(root: str, value: float, queue) -> None:
    import time

    def slow() -> Artifact:
        time.sleep(0.5)
        return Artifact({"w": torch.full((2,), value)}, {})

    artifact = Cache(root).get_or_build("model", {"shared": True}, slow)
    queue.put((artifact.from_cache, float(artifact.tensors["w"][0])))


def test_two_processes_building_the_same_entry(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_concurrent_worker, args=(str(tmp_path), float(i), queue)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcomes = sorted(queue.get(timeout=5) for _ in procs)
    assert [p.exitcode for p in procs] == [0, 0]
    assert [from_cache for from_cache, _ in outcomes] == [False, True]  # one built, the other loaded it
    assert outcomes[0][1] == outcomes[1][1]
    assert len(list(Cache(tmp_path).entries())) == 1 and Cache(tmp_path).verify() == []


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
