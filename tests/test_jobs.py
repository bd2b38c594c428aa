"""Tests for advlib.jobs: `advlib run all --jobs N` runs N notebooks at a time, longest first, cores shared."""

from __future__ import annotations

import json
import threading
import time

import pytest

from advlib import cli, jobs


def _fake_spawn(monkeypatch, fail=()):
    seen = {"order": [], "threads": set(), "running": 0, "most": 0}
    lock = threading.Lock()

    def spawn(command, env, log):
        stem = command[command.index("run") + 1]
        with lock:
            seen["order"].append(stem)
            seen["threads"].add(env["OMP_NUM_THREADS"])
            seen["running"] += 1
            seen["most"] = max(seen["most"], seen["running"])
        time.sleep(0.2)
        with lock:
            seen["running"] -= 1
        log.write_text(" ".join(command[3:]))
        return 1 if stem in fail else 0

    monkeypatch.setattr(jobs, "_spawn", spawn)
    monkeypatch.setattr(jobs.os, "cpu_count", lambda: 2)
    return seen


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A project whose last published default runs took 10 s (a), 30 s (b) and none (c)."""
    for stem, seconds in (("a", 10.0), ("b", 30.0)):
        folder = tmp_path / "figures" / stem / "default"
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps({"wall_time_s": seconds}))
    monkeypatch.setenv("ADVLIB_HOME", str(tmp_path))
    return tmp_path


def test_runs_go_longest_first_two_at_a_time_with_one_core_each(home, monkeypatch):
    seen = _fake_spawn(monkeypatch)
    jobs.run_side_by_side(["a", "b", "c"], "default", [], publish=True, jobs=1)
    assert seen["order"] == ["b", "a", "c"]  # one at a time: the start order is the submission order
    seen["order"].clear()
    seen["threads"].clear()
    results = jobs.run_side_by_side(["a", "b", "c"], "default", ["seed=1"], publish=True, jobs=2)
    assert sorted(seen["order"][:2]) == ["a", "b"] and seen["order"][2] == "c"  # the two longest start together
    assert seen["most"] == 2 and seen["threads"] == {"1"}
    assert [(r.stem, r.status) for r in results] == [("b", 0), ("a", 0), ("c", 0)]
    assert results[0].log == home / "runs" / "b" / "default.log"
    assert results[0].log.read_text() == "run b --profile default --set seed=1 --publish"


def test_a_failed_run_does_not_stop_the_others(home, monkeypatch):
    _fake_spawn(monkeypatch, fail=("b",))
    results = jobs.run_side_by_side(["a", "b", "c"], "default", [], publish=False, jobs=3)
    assert {r.stem: r.status for r in results} == {"b": 1, "a": 0, "c": 0}


def test_threads_share_the_cores_and_jobs_below_one_are_refused():
    assert jobs.job_threads(1, 6) == (jobs.os.cpu_count() or 1)
    assert jobs.job_threads(64, 6) == 1
    with pytest.raises(ValueError, match="jobs must be at least 1, got 0"):
        jobs.job_threads(0, 6)


def test_run_all_with_jobs_checks_every_notebook_before_anything_runs(monkeypatch, capsys):
    seen = _fake_spawn(monkeypatch)
    assert cli.main(["run", "all", "--profile", "ci", "--jobs", "2", "--set", "nope=1"]) == 2
    assert "nope" in capsys.readouterr().err and seen["order"] == []
