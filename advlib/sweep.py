"""Parameter sweeps of a notebook: one papermill run per grid point, locally or on a Dask cluster, gathered into one
tidy table.

Each point runs `advlib run <stem>` in its own process with its overrides and its own figures folder
(`$ADVLIB_FIGURES`), so points never share a Python interpreter or an output file; they share the artifact cache by
path (its file locks make concurrent builds of one artifact safe), so points reuse each other's trained models.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from tqdm.auto import tqdm

from . import params as params_mod
from .files import atomic_write_text
from .runtime import cache_root, project_root

EXECUTORS = ("local", "dask")
SWEEP_FILE = "sweep.json"


@dataclass
class Point:
    """One grid point: its overrides (swept keys plus the seed) and where its outputs go."""

    name: str
    values: dict[str, Any]
    notebook: str
    figures: str


@dataclass
class PointResult:
    name: str
    status: Literal["ok", "failed"]
    seconds: float
    error: str = ""


@dataclass
class Sweep:
    """A planned sweep: the grid, its points and its folder runs/<stem>/<sweep id>/."""

    stem: str
    profile: str
    grid: dict[str, list[Any]]
    seeds: list[int] | None
    points: list[Point] = field(default_factory=list)
    sweep_id: str = ""

    @property
    def folder(self) -> Path:
        return project_root() / "runs" / self.stem / self.sweep_id

    @property
    def keys(self) -> list[str]:
        """The swept keys, with 'seed' last when seeds are swept."""
        return list(self.grid) + (["seed"] if self.seeds else [])

    def point(self, name: str) -> Point:
        return next(p for p in self.points if p.name == name)


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """['eps=0.1,0.2', 'k=3,5'] -> {'eps': [0.1, 0.2], 'k': [3, 5]}; values are read as YAML (never code)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, _, values = item.partition("=")
        key = key.strip()
        if not key or not values.strip():
            raise ValueError(f"grid {item!r} is not of the form key=v1,v2,...")
        if key in grid:
            raise ValueError(f"grid key {key!r} is given twice")
        grid[key] = [params_mod.parse_override(f"{key}={v}")[1] for v in _split_values(values)]
    return grid


def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets, so 'a=[1,2],[3,4]' gives two list values."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", json.dumps(value) if not isinstance(value, str) else value).strip("-")


def plan(stem: str, profile: str, grid: dict[str, list[Any]], seeds: Sequence[int] | None = None) -> Sweep:
    """Expand the grid (times the seeds), validate every point's parameters (before any run) and name the points.
    The sweep id is a hash of the stem, profile, grid and seeds, so the same command finds the same folder."""
    if not grid and not seeds:
        raise ValueError("a sweep needs at least one --grid key=v1,v2 or --seeds")
    if seeds and "seed" in grid:
        raise ValueError("give the seeds either with --seeds or as a grid key 'seed', not both")
    axes = [grid[k] for k in grid] + ([list(seeds)] if seeds else [])
    digest = hashlib.sha256(
        json.dumps([stem, str(profile), grid, list(seeds or [])], sort_keys=True, default=str).encode()
    ).hexdigest()[:10]
    sweep = Sweep(stem, str(profile), grid, list(seeds) if seeds else None, sweep_id=f"sweep-{digest}")
    for combo in itertools.product(*axes):
        values = dict(zip(sweep.keys, combo))
        params_mod.load(stem, profile, values)  # a bad point stops the sweep before anything runs
        name = "__".join(f"{_slug(k)}={_slug(v)}" for k, v in values.items())
        sweep.points.append(Point(name, values, str(sweep.folder / f"{name}.ipynb"), str(sweep.folder / name)))
    return sweep


def run_point(stem: str, profile: str, point: Point, threads: int, home: str, cache: str) -> PointResult:
    """Execute one point in a fresh process (`python -m advlib.cli run`) in the project `home` with the artifact
    `cache` (both resolved by the submitting process, so a cluster worker started elsewhere uses the same paths); a
    failure comes back as a result with the papermill error, never as an exception."""
    began = time.perf_counter()
    overrides = {**({"threads": threads} if "threads" not in point.values else {}), **point.values}
    command = [
        sys.executable,
        "-m",
        "advlib.cli",
        "run",
        stem,
        "--profile",
        profile,
        "--output",
        point.notebook,
        *(item for k, v in overrides.items() for item in ("--set", f"{k}={json.dumps(v)}")),
    ]
    env = {
        **os.environ,
        "ADVLIB_FIGURES": point.figures,
        "ADVLIB_HOME": home,
        "ADVLIB_CACHE": cache,
        "OMP_NUM_THREADS": str(threads),
    }
    Path(point.notebook).parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode == 0:
        return PointResult(point.name, "ok", seconds)
    return PointResult(point.name, "failed", seconds, _papermill_error(done.stderr))


def _papermill_error(stderr: str) -> str:
    """The papermill/advlib error lines of a failed run (the exception, not the whole traceback)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    for marker in ("PapermillExecutionError", "advlib:", "Error"):
        hits = [i for i, line in enumerate(lines) if marker in line]
        if hits:
            return "\n".join(lines[hits[-1] : hits[-1] + 6])
    return "\n".join(lines[-6:])


def _execute(
    sweep: Sweep, todo: list[Point], executor: str, workers: int, scheduler: str | None
) -> Iterable[PointResult]:
    threads = max(1, (os.cpu_count() or 1) // workers)
    paths = (str(project_root()), str(cache_root()))
    if executor == "local":
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(run_point, sweep.stem, sweep.profile, p, threads, *paths) for p in todo]
            for future in as_completed(futures):
                yield future.result()
        return
    from dask.distributed import Client, LocalCluster
    from dask.distributed import as_completed as dask_completed

    cluster = (
        None
        if scheduler
        else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    )
    client = Client(scheduler or cluster)
    try:
        dask_futures = [
            client.submit(
                run_point, sweep.stem, sweep.profile, p, threads, *paths, key=f"{sweep.sweep_id}-{p.name}", pure=False
            )
            for p in todo
        ]
        for dask_future in dask_completed(dask_futures):
            yield dask_future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_sweep(
    sweep: Sweep,
    *,
    executor: str = "local",
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = False,
) -> list[PointResult]:
    """Run the sweep's points (with `resume`, only those that failed or never finished) and record every point's
    outcome in runs/<stem>/<sweep id>/sweep.json."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r} is not allowed; choose one of {', '.join(EXECUTORS)}")
    if scheduler and executor != "dask":
        raise ValueError(f"--scheduler {scheduler!r} needs --executor dask")
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    record = sweep.folder / SWEEP_FILE
    previous = {r["name"]: r for r in json.loads(record.read_text())["results"]} if resume and record.is_file() else {}
    done = {
        n: PointResult(**r)
        for n, r in previous.items()
        if r["status"] == "ok" and Path(sweep.point(n).notebook).is_file()
    }
    todo = [p for p in sweep.points if p.name not in done]
    results = dict(done)
    sweep.folder.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(sweep.points), initial=len(done), desc=f"sweep {sweep.stem} ({executor})")
    try:
        for result in _execute(sweep, todo, executor, min(workers, max(1, len(todo))), scheduler):
            results[result.name] = result
            bar.update(1)
            bar.write(
                f"[{result.status}] {result.name} ({result.seconds:.1f} s)"
                + (f": {result.error.splitlines()[0]}" if result.error else "")
            )
            _write_record(sweep, results)
    finally:
        bar.close()
    _write_record(sweep, results)
    return [results[p.name] for p in sweep.points if p.name in results]


def _write_record(sweep: Sweep, results: dict[str, PointResult]) -> None:
    record = {
        "stem": sweep.stem,
        "profile": sweep.profile,
        "grid": sweep.grid,
        "seeds": sweep.seeds,
        "points": [asdict(p) for p in sweep.points],
        "results": [asdict(r) for r in results.values()],
    }
    atomic_write_text(sweep.folder / SWEEP_FILE, json.dumps(record, indent=1, default=str))


def gather(sweep: Sweep, results: Sequence[PointResult]) -> pd.DataFrame:
    """One tidy table of every successful point's result tables: a column per swept key, then table, row (the
    table's first column), column and value."""
    keys = sweep.keys
    ok = {r.name for r in results if r.status == "ok"}
    rows = []
    for point in sweep.points:
        if point.name not in ok:
            continue
        folder = Path(point.figures) / sweep.stem / Path(sweep.profile).stem
        for csv in sorted(folder.glob("*.csv")):
            table = pd.read_csv(csv, dtype=str, keep_default_na=False)
            if table.empty:
                continue
            label = table.columns[0]
            for i, record in enumerate(table.to_dict("records")):
                for column, value in record.items():
                    if column != label:
                        rows.append(
                            {
                                **{k: point.values[k] for k in keys},
                                "table": csv.stem,
                                "row": record[label] or str(i),
                                "column": column,
                                "value": value,
                            }
                        )
    tidy = pd.DataFrame(rows, columns=[*keys, "table", "row", "column", "value"])
    numeric = pd.to_numeric(tidy["value"], errors="coerce")
    tidy["value"] = numeric.where(numeric.notna(), tidy["value"])
    return tidy


def write_gathered(sweep: Sweep, tidy: pd.DataFrame, results: Sequence[PointResult]) -> dict[str, Path]:
    """results.csv/.md (the tidy table) and summary.csv/.md (each point's status, time and error)."""
    out = {}
    summary = pd.DataFrame(
        [
            {
                "point": r.name,
                "status": r.status,
                "seconds": round(r.seconds, 1),
                "notebook": sweep.point(r.name).notebook,
                "error": r.error.replace("\n", " | "),
            }
            for r in results
        ]
    )
    for name, frame in (("results", tidy), ("summary", summary)):
        out[f"{name}.csv"] = sweep.folder / f"{name}.csv"
        frame.to_csv(out[f"{name}.csv"], index=False, lineterminator="\n")
        out[f"{name}.md"] = sweep.folder / f"{name}.md"
        out[f"{name}.md"].write_text(frame.to_markdown(index=False) + "\n")
    return out


def plot_metric(sweep: Sweep, tidy: pd.DataFrame, metric: str, key: str) -> Path:
    """metric 'table.column' against swept key `key`: one line per row of that table, the mean over the other keys
    and seeds with their standard deviation as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, _, column = metric.partition(".")
    keys = sweep.keys
    if key not in keys:
        raise ValueError(f"--plot key {key!r} is not swept; swept keys: {', '.join(keys)}")
    chosen = tidy[(tidy["table"] == table) & (tidy["column"] == column)]
    if chosen.empty:
        available = sorted({f"{t}.{c}" for t, c in zip(tidy["table"], tidy["column"])})
        raise ValueError(f"--plot metric {metric!r} is not in the gathered tables; available: {', '.join(available)}")
    chosen = chosen.assign(value=pd.to_numeric(chosen["value"], errors="coerce")).dropna(subset=["value"])
    stats = chosen.groupby(["row", key])["value"].agg(["mean", "std"]).reset_index()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for row, part in stats.groupby("row", sort=False):
        part = part.sort_values(key)
        ax.plot(part[key], part["mean"], marker="o", label=str(row))
        ax.fill_between(
            part[key], part["mean"] - part["std"].fillna(0), part["mean"] + part["std"].fillna(0), alpha=0.2
        )
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = sweep.folder / f"plot_{_slug(metric)}_vs_{_slug(key)}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
