"""Cache: content-addressed keys, build once then load, failed builds leave nothing, prune (faults: tests/reliability)."""

from __future__ import annotations

import logging

import pytest
import torch

from advlib.cache import Artifact, Cache, derive_key


def _build(value: float = 1.0):
    calls = []

    def build() -> Artifact:
        calls.append(1)
        return Artifact({"w": torch.full((3, 4), value)}, {"note": "built"})

    return build, calls


def test_key_is_canonical_and_parameter_sensitive():
    assert derive_key("model", a=1, b=[1, 2]).key == derive_key("model", b=[1, 2], a=1).key
    assert derive_key("model", a=1).key != derive_key("model", a=2).key
    assert derive_key("model", a=1).key != derive_key("adversarial", a=1).key


def test_key_names_a_float64_run_apart_and_keeps_float32_keys_as_they_were():
    import hashlib

    from advlib.cache import CACHE_FORMAT

    plain = derive_key("model", a=1).key
    assert plain == hashlib.sha256(f'{CACHE_FORMAT}|model|{{"a":1}}'.encode()).hexdigest()[:20]
    torch.set_default_dtype(torch.float64)
    try:
        assert derive_key("model", a=1).key != plain
    finally:
        torch.set_default_dtype(torch.float32)


def test_build_once_then_load(tmp_path, caplog):
    cache = Cache(tmp_path)
    build, calls = _build()
    first = cache.get_or_build(derive_key("model", x=1), build)
    with caplog.at_level(logging.INFO, logger="advlib"):
        second = cache.get_or_build(derive_key("model", x=1), build)
    assert len(calls) == 1 and not first.from_cache and second.from_cache
    assert torch.equal(second.tensors["w"], first.tensors["w"]) and second.meta == {"note": "built"}
    assert f"loaded model (model/{derive_key('model', x=1).key})" in caplog.text
    assert str(tmp_path) not in caplog.text  # notices end up in committed notebooks: no machine paths
    assert [row["kind"] for row in cache.ls()] == ["model"]


def test_failed_build_leaves_no_entry(tmp_path):
    cache = Cache(tmp_path)

    def broken() -> Artifact:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get_or_build(derive_key("model", x=1), broken)
    assert list(cache.entries()) == []
    assert not list((tmp_path / "model").glob(".tmp-*"))


def test_prune(tmp_path):
    cache = Cache(tmp_path)
    for i in range(3):
        cache.get_or_build(derive_key("model" if i < 2 else "adversarial", i=i), _build()[0])
    assert len(cache.prune("adversarial")) == 1
    assert {row["kind"] for row in cache.ls()} == {"model"}
    cache.prune()
    assert cache.ls() == []


def test_bad_kind_rejected(tmp_path):
    with pytest.raises(ValueError, match="kind '../x'"):
        Cache(tmp_path).entry_dir("../x", "abc")


def test_cached_frames_load_back_exactly(tmp_path, caplog):
    import numpy as np
    import pandas as pd

    from advlib.cache import cached_frames

    named = pd.DataFrame(
        {"system": ["A", "B"], "members": [1, 4], "acc": [0.1 + 0.2, np.nan], "ok": [True, False]}
    ).set_index("system")
    curve = pd.DataFrame({"x": [1.0, 2.5]}, index=pd.Index([0.5, 1.0], name="epoch"))
    curve.columns.name = "score"
    multi = pd.DataFrame(
        {("a", 1): [1, 2], ("b", 2): [3.3, 4.4]},
        index=pd.MultiIndex.from_tuples([("x", 1), ("y", 2)], names=["k", "n"]),
    )
    text = pd.DataFrame({"s": ["u", "v"], "f": np.array([1e-17, 2 / 3], dtype=np.float32)})
    frames, calls = (named, curve, multi, text), []
    cache = Cache(tmp_path)
    cached_frames(derive_key("tables", t=1), lambda: (calls.append(1), frames)[1], cache=cache)
    with caplog.at_level(logging.INFO, logger="advlib"):
        loaded = cached_frames(derive_key("tables", t=1), lambda: (calls.append(1), frames)[1], cache=cache)
    assert len(calls) == 1 and "loaded" in caplog.text
    for built, back in zip(frames, loaded):
        pd.testing.assert_frame_equal(back, built, check_exact=True, check_index_type=True, check_column_type=True)
        assert back.to_string() == built.to_string() and back.to_html() == built.to_html()
    assert isinstance(loaded[3].index, pd.RangeIndex)
