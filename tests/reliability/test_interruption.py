"""SIGKILL a training run and a cached attack at random moments: the rerun resumes, ends with exactly the weights
(or adversarials) of an uninterrupted run, and no kill leaves a partial cache entry."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from advlib.cache import TENSORS, Cache

CHILD = Path(__file__).with_name("_child.py")


def _start(mode: str, root: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, str(CHILD), mode, str(root)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def _run_to_end(mode: str, root: Path) -> float:
    """Run the child to its end; return the seconds of its work after "ready" (the kills are timed from there, so a
    slow interpreter start-up must not count as work the kills could land in)."""
    process = _start(mode, root)
    began = time.perf_counter()
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0 and out.strip().endswith("done"), out
    return time.perf_counter() - began


def _entry_tensors(root: Path, kind: str) -> dict:
    entries = [e for e in Cache(root).entries() if e.parent.name == kind]
    assert len(entries) == 1, entries
    return load_file(str(entries[0] / TENSORS))


def _assert_no_partial_entry(root: Path) -> None:
    cache = Cache(root)
    assert cache.verify() == []  # every entry present is complete and matches its checksum


@pytest.mark.parametrize("mode, kind", [("train", "reliability"), ("attack", "adversarial")])
def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_result(mode, kind, tmp_path, ledger):
    reference_root, killed_root = tmp_path / "reference", tmp_path / "killed"
    duration = _run_to_end(mode, reference_root)
    expected = _entry_tensors(reference_root, kind)
    rng = random.Random(f"{mode}-kills")
    kills = 0
    for _ in range(4):
        process = _start(mode, killed_root)
        time.sleep(rng.uniform(0.05, 0.6) * duration)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        _assert_no_partial_entry(killed_root)
        ledger.record("interruption (SIGKILL)", f"{mode} killed at a random point", "no partial entry")
    _run_to_end(mode, killed_root)
    got = _entry_tensors(killed_root, kind)
    assert got.keys() == expected.keys()
    for name in expected:
        assert (got[name] == expected[name]).all(), name  # bit-identical to the uninterrupted run
    assert kills >= 2, "the run finished before most kills: lengthen the child's work"
    if mode == "train":
        assert not any((killed_root / "checkpoints").rglob("*.safetensors"))  # checkpoints removed once stored
    ledger.record(
        "interruption (SIGKILL)", f"{mode}: rerun after {kills} kills equals the uninterrupted run", "identical result"
    )
