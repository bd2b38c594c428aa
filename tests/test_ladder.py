"""Tests for advlib.ladder: rungs scale the declared budget keys, margins and trends from claims tables."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from advlib import jobs, ladder, params
from advlib.claims import CLAIM_COLUMNS


def test_rungs_scale_every_budget_key_to_a_whole_number_of_at_least_one():
    epochs = params.load("quickstart", "default").train.epochs
    assert ladder.study_class("quickstart").budget == ("train.epochs",)
    assert ladder.rung_overrides("quickstart", "default", 0.5) == {"train.epochs": max(1, round(epochs / 2))}
    assert ladder.rung_overrides("quickstart", "default", 0.01) == {"train.epochs": 1}
    assert ladder.rung_overrides("quickstart", "default", 1.0) == {}
    points = ladder.plan("quickstart", "default", [1.0, 0.25])
    assert [p.name for p in points] == ["budget-0.25", "budget-1"]
    assert points[0].figures.endswith("runs/quickstart/ladder-default/budget-0.25")


@pytest.mark.parametrize(
    ("stem", "fractions", "match"),
    [
        ("nope", [0.5], "unknown notebook 'nope'"),
        ("quickstart", [0.0], r"in \(0, 1\]"),
        ("quickstart", [0.5, 0.5], "distinct"),
    ],
)
def test_bad_ladders_are_refused_before_anything_runs(stem, fractions, match):
    with pytest.raises(ValueError, match=match):
        ladder.plan(stem, "default", fractions)


def _claims(margins):
    rows = []
    for cid, (margin, half) in margins.items():
        rows.append(
            dict.fromkeys(CLAIM_COLUMNS, "")
            | {
                "id": cid,
                "verdict": "undecided",
                "n": 100,
                "margin": margin,
                "margin_low": margin - half,
                "margin_high": margin + half,
            }
        )
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def test_trend_is_measured_against_the_full_budget_interval():
    claims = {
        0.25: _claims({"grows": (-10.0, 4.0), "shrinks": (5.0, 4.0), "flat": (1.0, 4.0), "gone": (1.0, 1.0)}),
        1.0: _claims({"grows": (2.0, 3.0), "shrinks": (-3.0, 3.0), "flat": (3.0, 3.0), "gone": (float("nan"), 0.0)}),
    }
    table = ladder.margins(claims, {0.25: {"train.epochs": 1}, 1.0: {}})
    assert table["settings"].tolist()[:1] == ["train.epochs=1"] and table["settings"].iloc[-1] == "the profile's"
    trend = ladder.trend(table)
    assert trend.to_dict() == {"grows": "toward the paper", "shrinks": "away", "flat": "flat", "gone": ""}
    figure = ladder.plot(table, "demo")
    assert len([ax for ax in figure.axes if ax.get_title()]) == 4


def test_margins_refuse_an_old_claims_table():
    with pytest.raises(ValueError, match="lacks columns claim, cites, evidence, n, margin"):
        ladder.margins({1.0: pd.DataFrame({"id": ["a"], "verdict": ["holds"]})}, {1.0: {}})


def _fake_rungs(monkeypatch, tmp_path, fail=""):
    """Rungs that write a claims table after 0.3 s instead of running a notebook; records threads and overlap."""
    import threading
    import time
    from pathlib import Path

    from advlib.sweep import Point, PointResult

    real_plan = ladder.plan
    seen = {"threads": [], "running": 0, "most": 0}
    lock = threading.Lock()

    def plan(stem, profile, fractions):
        return [
            Point(p.name, p.values, str(tmp_path / f"{p.name}.ipynb"), str(tmp_path / p.name))
            for p in real_plan(stem, profile, fractions)
        ]

    def run_point(stem, profile, point, threads, home, cache):
        with lock:
            seen["threads"].append(threads)
            seen["running"] += 1
            seen["most"] = max(seen["most"], seen["running"])
        time.sleep(0.3)
        with lock:
            seen["running"] -= 1
        if point.name == fail:
            return PointResult(point.name, "failed", 0.3, "boom")
        folder = Path(point.figures) / stem / profile
        folder.mkdir(parents=True, exist_ok=True)
        _claims({"c": (len(point.values) and -1.0, 1.0)}).to_csv(folder / "claims.csv", index=False)
        Path(point.notebook).write_text("{}")
        rung = params.load(stem, profile, {**point.values, "threads": threads}).model_dump(mode="json")
        manifest = {"params": rung, "git_commit": ladder.git_commit()}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return PointResult(point.name, "ok", 0.3)

    monkeypatch.setattr(ladder, "git_commit", lambda: "abc")
    monkeypatch.setattr(ladder, "plan", plan)
    monkeypatch.setattr(ladder, "run_point", run_point)
    monkeypatch.setattr(jobs.os, "cpu_count", lambda: 2)
    monkeypatch.setenv("ADVLIB_FIGURES", str(tmp_path / "out"))
    return seen


def test_rungs_run_jobs_at_a_time_with_the_cores_shared_and_finished_rungs_reused(monkeypatch, tmp_path):
    seen = _fake_rungs(monkeypatch, tmp_path)
    paths = ladder.run_ladder("quickstart", "default", [0.5, 1.0], jobs=2)
    assert seen["most"] == 2 and seen["threads"] == [1, 1]
    table = pd.read_csv(paths["table"])
    assert table["budget"].tolist() == [0.5, 1.0] and table["margin"].tolist() == [-1.0, 0.0]
    ladder.run_ladder("quickstart", "default", [0.25, 0.5, 1.0], jobs=2)  # only the new rung runs, all cores
    assert seen["threads"] == [1, 1, 2]
    # a rung made with other parameters (the profile changed since) or at another commit is run again
    manifest = tmp_path / "budget-0.5" / "quickstart" / "default" / "manifest.json"
    changed = json.loads(manifest.read_text())
    changed["params"]["seed"] += 1
    manifest.write_text(json.dumps(changed))
    ladder.run_ladder("quickstart", "default", [0.25, 0.5, 1.0], jobs=2)
    assert seen["threads"] == [1, 1, 2, 2]
    monkeypatch.setattr(ladder, "git_commit", lambda: "def")
    ladder.run_ladder("quickstart", "default", [0.25, 0.5, 1.0], jobs=2)
    assert seen["threads"] == [1, 1, 2, 2, 1, 1, 1]
    monkeypatch.setattr(ladder, "git_commit", lambda: "def+dirty")  # a dirty tree reuses nothing
    ladder.run_ladder("quickstart", "default", [1.0], jobs=1)
    assert len(seen["threads"]) == 8
    assert ladder.job_threads(1, 3) == 2 and ladder.job_threads(8, 3) == 1
    with pytest.raises(ValueError, match="jobs must be at least 1, got 0"):
        ladder.job_threads(0, 1)


def test_a_failed_rung_stops_the_ladder_with_its_error(monkeypatch, tmp_path):
    _fake_rungs(monkeypatch, tmp_path, fail="budget-0.5")
    with pytest.raises(RuntimeError, match="rung budget-0.5 of quickstart failed: boom"):
        ladder.run_ladder("quickstart", "default", [0.5, 1.0], jobs=2)


def test_ladder_command_refuses_jobs_below_one(capsys):
    from advlib import cli

    with pytest.raises(SystemExit) as stopped:
        cli.main(["ladder", "quickstart", "--jobs", "0"])
    assert (
        stopped.value.code == 2 and "--jobs: expected a whole number of at least 1, got '0'" in capsys.readouterr().err
    )
