"""The stage timer: nested stages count exclusive of their children, repeats add up, and a cache build or a published
table is a stage of the run's timer."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import torch
from torch import nn

from advlib.cache import Artifact, Cache, cached_model, derive_key
from advlib.experiments.base import Study, artifact
from advlib.profiling import StageTimer, start_timer, timed


def test_nested_stage_time_is_counted_once():
    timer = StageTimer()
    with timer.stage("table", "outer"):
        time.sleep(0.05)
        with timer.stage("model", "inner"):
            time.sleep(0.1)
    with timer.stage("model", "inner"):
        time.sleep(0.1)
    summary = timer.summary()
    rows = {(s["kind"], s["label"]): s for s in summary["stages"]}
    assert rows[("model", "inner")]["count"] == 2
    assert 0.2 <= rows[("model", "inner")]["seconds"] < 0.3
    assert 0.05 <= rows[("table", "outer")]["seconds"] < 0.1  # its child's 0.1 s is not counted again
    assert [s["label"] for s in summary["stages"]] == ["inner", "outer"]  # largest first
    staged = sum(s["seconds"] for s in summary["stages"])
    assert abs(summary["wall_s"] - staged - summary["outside_stages_s"]) < 0.01


def test_timed_without_a_timer_only_runs_the_block(monkeypatch):
    monkeypatch.setattr("advlib.profiling._active", [])
    ran = []
    with timed("model", "x"):
        ran.append(1)
    assert ran == [1]


class _Tiny(Study):
    stem = "quickstart"

    @artifact("numbers", "A table built from a cached tensor.")
    def numbers(self) -> pd.DataFrame:
        trained = cached_model(derive_key("model", what="tiny"), nn.Linear(3, 1), lambda m, _: [], cache=self.cache)
        built = self.cache.get_or_build(
            derive_key("adversarial", what="tiny"), lambda: Artifact({"w": torch.ones(3)}, {}), label="noise@1"
        )
        return pd.DataFrame({"w": built.tensors["w"].tolist(), "b": trained.model.bias.item()})


class _Out:
    stem, profile = "quickstart", "profiling-test"


def test_cache_builds_and_tables_are_stages_of_the_active_timer(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLIB_FIGURES", str(tmp_path / "figures"))
    timer = start_timer()
    study = _Tiny(None, cache=Cache(tmp_path / "cache"))
    study.publish("numbers", _Out())
    study.publish("numbers", _Out())  # the second time the model is loaded, not built
    counts = {(s["kind"], s["label"]): s["count"] for s in timer.summary()["stages"]}
    assert counts == {("table", "numbers"): 2, ("training", "model"): 1, ("adversarial", "noise@1"): 1}


def _benchmarks() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
    spec = importlib.util.spec_from_file_location("advlib_benchmarks", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_profile_rows_group_attacks_by_family_and_account_for_the_whole_cold_run():
    bench = _benchmarks()
    summary = {
        "wall_s": 90.0,
        "outside_stages_s": 10.0,
        "stages": [
            {"kind": "training", "label": "lenet5 on mnist5k", "count": 1, "seconds": 40.0},
            {"kind": "adversarial", "label": "adversarials pgd_linf@0.1", "count": 2, "seconds": 20.0},
            {"kind": "adversarial", "label": "adversarials pgd_linf@0.3", "count": 1, "seconds": 15.0},
            {"kind": "table", "label": "union", "count": 1, "seconds": 4.5},
            {"kind": "evaluation", "label": "accuracy vs steps", "count": 1, "seconds": 0.5},
        ],
    }
    lines = bench.stage_profile("quickstart", 100.0, summary, share=0.01)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    by_stage = {c[1]: c for c in cells}
    assert by_stage["attack pgd_linf"][2:4] == ["3", "35.0"]  # both eps in one family row
    assert by_stage["training lenet5 on mnist5k"][4] == "40.0%"
    assert "1 smaller stages" in by_stage  # the 0.5 s evaluation is under 1% of the cold run
    assert sum(float(c[3]) for c in cells) == pytest.approx(100.0)  # stages + outside + start-up = the cold run


def test_a_runs_manifest_carries_its_stage_timer(tmp_path, monkeypatch):
    from advlib import params
    from advlib.runtime import Run

    monkeypatch.setenv("ADVLIB_FIGURES", str(tmp_path))
    p = params.load("quickstart", "ci", {})
    run = Run("quickstart", "ci", p, seed=0, device="cpu", threads=None)  # float32: no default dtype left behind
    with timed("training", "a model"):
        time.sleep(0.02)
    stages = run.manifest()["time_by_stage"]
    assert stages["stages"][0]["label"] == "a model" and stages["stages"][0]["seconds"] >= 0.02
    # the run's wall time holds the stage: wall = outside + staged, each rounded to the millisecond
    assert stages["wall_s"] == pytest.approx(stages["outside_stages_s"] + stages["stages"][0]["seconds"], abs=2e-3)
