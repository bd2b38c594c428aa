"""Truncated or bit-flipped cache entries and training checkpoints are detected by checksum, reported by
`advlib cache verify`, and rebuilt (with a warning) to the same result."""

from __future__ import annotations

import json
import logging
import random

import pytest
import torch

from advlib.cache import META, TENSORS, Artifact, Cache, CacheError, cached_model, derive_key
from advlib.cli import main as cli
from advlib.data import load_dataset
from advlib.models import create_model
from advlib.params import TrainSpec
from advlib.train import CHECKPOINT, ClassifierStep, fit


def _damage(path, how: str, rng: random.Random) -> None:
    raw = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(raw[: rng.randrange(1, len(raw))]))
    elif how == "flip":
        offset = rng.randrange(len(raw) // 2, len(raw))  # inside the tensor data, past the header
        raw[offset] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(raw))
    elif how == "garbage":
        path.write_bytes(b"\x00garbage" * 7)
    elif how == "delete":
        path.unlink()


def _build_counter():
    calls = []

    def build() -> Artifact:
        calls.append(1)
        return Artifact({"w": torch.arange(64, dtype=torch.float32).view(8, 8)}, {"note": "built"})

    return build, calls


DAMAGES = [
    (TENSORS, "truncate"),
    (TENSORS, "flip"),
    (TENSORS, "garbage"),
    (TENSORS, "delete"),
    (META, "truncate"),
    (META, "garbage"),
    (META, "delete"),
]


@pytest.mark.parametrize("target, how", DAMAGES)
def test_damaged_entry_is_listed_by_cli_verify_then_rebuilt_with_a_warning(
    target, how, tmp_path, caplog, capsys, ledger
):
    cache, rng = Cache(tmp_path), random.Random(f"{target}-{how}")
    build, calls = _build_counter()
    original = cache.get_or_build(derive_key("model", x=1), build)
    cache.get_or_build(derive_key("model", y=2), build)  # an intact neighbour
    entry = cache.entry_dir("model", derive_key("model", x=1).key)
    _damage(entry / target, how, rng)

    assert cli(["cache", "verify", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"CORRUPT {entry}" in out and "1 corrupt of 2 entries" in out
    with pytest.raises(CacheError, match="corrupt"):
        cache.read("model", derive_key("model", x=1).key)
    with caplog.at_level(logging.WARNING, logger="advlib"):
        again = cache.get_or_build(derive_key("model", x=1), build)
    assert "corrupt" in caplog.text and "rebuilding" in caplog.text
    assert len(calls) == 3 and torch.equal(again.tensors["w"], original.tensors["w"])
    assert cli(["cache", "verify", "--root", str(tmp_path)]) == 0
    ledger.record("corruption", f"cache {target} {how}", "detected, listed, rebuilt")


def test_prune_corrupt_removes_only_the_damaged_entries(tmp_path, capsys, ledger):
    cache = Cache(tmp_path)
    build, _ = _build_counter()
    for i in range(4):
        cache.get_or_build(derive_key("model", i=i), build)
    damaged = [cache.entry_dir("model", derive_key("model", i=i).key) for i in (1, 3)]
    for entry in damaged:
        _damage(entry / TENSORS, "flip", random.Random(str(entry)))
    assert sorted(p for p, _ in cache.verify()) == sorted(damaged)
    assert cli(["cache", "prune", "--corrupt", "--root", str(tmp_path)]) == 0
    assert len(list(cache.entries())) == 2 and cache.verify() == []
    ledger.record("corruption", "prune --corrupt with 2 of 4 entries damaged", "only the damaged removed")


@pytest.mark.parametrize("how", ["truncate", "flip", "garbage"])
def test_damaged_training_checkpoint_restarts_the_build_and_ends_identical(how, tmp_path, caplog, ledger):
    train = load_dataset("mnist5k", "train", n=200, seed=0)
    spec = TrainSpec(model="mlp1200", epochs=3, batch_size=50, model_options={"width": 32, "depth": 1})

    def run(checkpoint_dir, epochs=3):
        torch.manual_seed(0)
        model = create_model("mlp1200", width=32, depth=1)
        fit(
            ClassifierStep(model, train, spec.model_copy(update={"epochs": epochs})),
            seed=0,
            checkpoint_dir=checkpoint_dir,
        )
        return model

    reference = run(None)
    run(tmp_path, epochs=3)  # leaves a complete checkpoint after epoch 3 ...
    checkpoint = tmp_path / CHECKPOINT
    _damage(checkpoint, how, random.Random(how))  # ... which is then damaged
    with caplog.at_level(logging.WARNING, logger="advlib"):
        rerun = run(tmp_path)
    assert "corrupt" in caplog.text and "from scratch" in caplog.text
    for a, b in zip(reference.parameters(), rerun.parameters()):
        assert torch.equal(a, b)
    ledger.record("corruption", f"training checkpoint {how}", "detected, restarted, identical weights")


def test_corrupt_model_entry_is_retrained_to_the_same_weights(tmp_path, caplog, ledger):
    train = load_dataset("mnist5k", "train", n=100, seed=0)
    spec = TrainSpec(model="mlp1200", epochs=1, batch_size=50, model_options={"width": 16, "depth": 1})

    def get():
        torch.manual_seed(0)
        model = create_model("mlp1200", width=16, depth=1)
        build = lambda m, ckpt: fit(ClassifierStep(m, train, spec), checkpoint_dir=ckpt)  # noqa: E731
        return cached_model(derive_key("model", t=1), model, build, cache=Cache(tmp_path)).model

    first = get()
    entry = Cache(tmp_path).entry_dir("model", derive_key("model", t=1).key)
    meta = json.loads((entry / META).read_text())
    meta["sha256"][TENSORS] = "0" * 64  # a checksum that no longer matches
    (entry / META).write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="advlib"):
        second = get()
    assert "checksum mismatch" in caplog.text
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    ledger.record("corruption", "model entry with a wrong recorded checksum", "retrained, identical weights")
