"""A write that fails (disk full, simulated by a patched writer that leaves half a file) ends with a clear
message, and the cache entry, the training checkpoint or the result table keeps its previous complete state."""

from __future__ import annotations

import errno

import pandas as pd
import pytest
import torch

import advlib.cache as cache_mod
import advlib.train as train_mod
from advlib import report
from advlib.cache import Artifact, Cache, CacheError, derive_key
from advlib.data import load_dataset
from advlib.models import create_model
from advlib.params import TrainSpec
from advlib.train import CHECKPOINT, ClassifierStep, fit


def _half_then_full(real):
    """A writer that writes part of the file, then fails as a full disk does."""

    def write(tensors, filename, *args, **kwargs):
        real(tensors, filename, *args, **kwargs)
        with open(filename, "r+b") as handle:
            handle.truncate(max(1, handle.seek(0, 2) // 2))
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


def test_cache_write_on_a_full_disk(tmp_path, monkeypatch, ledger):
    cache = Cache(tmp_path)
    monkeypatch.setattr(cache_mod, "save_file", _half_then_full(cache_mod.save_file))
    with pytest.raises(CacheError, match=r"could not write cache entry model/.*No space left on device"):
        cache.get_or_build(derive_key("model", x=1), lambda: Artifact({"w": torch.ones(1000)}, {}))
    assert list(cache.entries()) == [] and not list((tmp_path / "model").glob(".tmp-*"))
    monkeypatch.undo()
    built = cache.get_or_build(derive_key("model", x=1), lambda: Artifact({"w": torch.ones(1000)}, {}))
    assert not built.from_cache and cache.verify() == []  # space back: the build goes through
    ledger.record("disk full", "cache entry write", "clear error, no entry, later build fine")


def test_checkpoint_write_on_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch, ledger):
    train = load_dataset("mnist5k", "train", n=100, seed=0)
    spec = TrainSpec(model="mlp1200", epochs=2, batch_size=50, model_options={"width": 16, "depth": 1})
    torch.manual_seed(0)
    fit(
        ClassifierStep(create_model("mlp1200", width=16, depth=1), train, spec.model_copy(update={"epochs": 1})),
        checkpoint_dir=tmp_path,
    )
    before = (tmp_path / CHECKPOINT).read_bytes()
    monkeypatch.setattr(train_mod, "save_file", _half_then_full(train_mod.save_file))
    torch.manual_seed(0)
    with pytest.raises(
        OSError, match=r"could not write the training checkpoint .*No space left.*previous checkpoint is kept"
    ):
        fit(ClassifierStep(create_model("mlp1200", width=16, depth=1), train, spec), checkpoint_dir=tmp_path)
    assert (tmp_path / CHECKPOINT).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]  # no half-written temp file left
    ledger.record("disk full", "training checkpoint write", "clear error, previous checkpoint intact")


def test_table_write_on_a_full_disk_keeps_the_previous_table(project, monkeypatch, ledger):
    table = pd.DataFrame({"a": [1.0, 2.0]})
    paths = report.save_table(table, "quickstart", "ci", "t")
    before = paths["csv"].read_bytes()
    real = report.Path.write_bytes

    def full(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report.Path, "write_bytes", full)
    with pytest.raises(OSError, match="No space left"):
        report.save_table(pd.DataFrame({"a": [3.0, 4.0]}), "quickstart", "ci", "t")
    monkeypatch.undo()
    assert paths["csv"].read_bytes() == before
    assert [p.name for p in paths["csv"].parent.iterdir() if p.name.endswith(".tmp")] == []
    ledger.record("disk full", "result table write", "clear error, previous table intact")
