"""Several notebooks side by side (`advlib run all --jobs N`): each `advlib run` in its own process with the cores
shared evenly, longest first, so that small models keep every core busy instead of two threads on one small batch.
The runs share the artifact cache by path (its file locks make concurrent builds of one artifact safe)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .runtime import profile_name, project_root


@dataclass(frozen=True)
class JobResult:
    """One notebook's run: its exit status and where its output went."""

    stem: str
    status: int
    log: Path


def last_wall_time(stem: str, profile: str) -> float:
    """Seconds the last published run of `stem` at `profile` took (its manifest), 0 when there is none."""
    manifest = project_root() / "figures" / stem / profile_name(profile) / "manifest.json"
    try:
        return float(json.loads(manifest.read_text()).get("wall_time_s", 0.0))
    except (OSError, ValueError):
        return 0.0


def job_threads(jobs: int, runs: int) -> int:
    """Intra-op threads per run when `jobs` of `runs` run at once: the cores shared evenly, at least one each."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    return max(1, (os.cpu_count() or 1) // max(1, min(jobs, runs)))


def _spawn(command: list[str], env: dict[str, str], log: Path) -> int:
    with log.open("w") as out:
        return subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT).returncode


def run_side_by_side(
    stems: Sequence[str], profile: str, overrides: Sequence[str], *, publish: bool, jobs: int
) -> list[JobResult]:
    """Run every notebook of `stems`, `jobs` at a time, longest first (by its last published wall time); each run's
    output goes to runs/<stem>/<profile>.log. A failed run does not stop the others; all results come back."""
    threads = job_threads(jobs, len(stems))
    order = sorted(stems, key=lambda stem: -last_wall_time(stem, profile))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}

    def one(stem: str) -> JobResult:
        log = project_root() / "runs" / stem / f"{profile_name(profile)}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "advlib.cli", "run", stem, "--profile", profile]
        command += [item for o in overrides for item in ("--set", o)] + (["--publish"] if publish else [])
        return JobResult(stem, _spawn(command, env, log), log)

    with ThreadPoolExecutor(max_workers=jobs) as pool:  # the threads only wait on the runs' processes
        futures = [pool.submit(one, stem) for stem in order]
        results = [f.result() for f in tqdm(as_completed(futures), total=len(futures), desc=f"{jobs} at a time")]
    return sorted(results, key=lambda r: order.index(r.stem))
