"""The budget ladder of a notebook: its profile rerun at fractions of its budget (each study's `budget` keys: epochs,
training images, attack steps), and each claim's margin against budget, to tell a miss that scale explains (its margin
grows toward the claim with budget) from one it does not.

Each rung is an unpublished `advlib run` in its own process (`sweep.run_point`), sharing the artifact cache, so the
full-budget rung reuses a published run's models and adversarial sets.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from . import params as params_mod
from .claims import CLAIM_COLUMNS
from .experiments.base import Study
from .jobs import job_threads
from .report import save_table
from .runtime import cache_root, git_commit, project_root, publishing_outputs
from .sweep import Point, run_point

FRACTIONS = (0.25, 0.5, 1.0)
LADDER = "ladder"
TRENDS = ("toward the paper", "away", "flat")


def study_class(stem: str) -> type[Study]:
    """The `Study` subclass that runs notebook `stem` (advlib.experiments.<stem>)."""
    if stem not in params_mod.list_stems():
        raise ValueError(f"unknown notebook {stem!r}; allowed: {', '.join(params_mod.list_stems())}")
    module = importlib.import_module(f"advlib.experiments.{stem}")
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Study) and getattr(value, "stem", None) == stem
    ]
    if len(found) != 1:
        raise LookupError(f"advlib.experiments.{stem} defines {len(found)} studies for {stem!r}, expected one")
    return found[0]


def _value(p: Any, key: str) -> Any:
    value = p
    for part in key.split("."):
        value = value[part] if isinstance(value, Mapping) else getattr(value, part)
    return value


def rung_overrides(stem: str, profile: str, fraction: float) -> dict[str, int]:
    """The budget keys of `stem` at `fraction` of `profile`'s values (whole numbers, at least 1); {} at 1."""
    if not 0 < fraction <= 1:
        raise ValueError(f"a ladder fraction must be in (0, 1], got {fraction}")
    keys = study_class(stem).budget
    if not keys:
        raise ValueError(f"{stem} declares no budget keys (Study.budget): nothing to scale")
    if fraction == 1:
        return {}
    p = params_mod.load(stem, profile)
    scaled = {}
    for key in keys:
        value = _value(p, key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"budget key {key!r} of {stem} must be a whole number, got {value!r}")
        scaled[key] = max(1, round(value * fraction))
    params_mod.load(stem, profile, scaled)  # a bad rung stops the ladder before anything runs
    return scaled


def plan(stem: str, profile: str = "default", fractions: Sequence[float] = FRACTIONS) -> list[Point]:
    """One point per fraction, under runs/<stem>/ladder-<profile>/budget-<fraction>/."""
    if len(set(fractions)) != len(fractions) or not fractions:
        raise ValueError(f"ladder fractions must be distinct and at least one, got {list(fractions)}")
    folder = project_root() / "runs" / stem / f"{LADDER}-{Path(profile).stem}"
    points = []
    for fraction in sorted(fractions):
        name = f"budget-{fraction:g}"
        points.append(
            Point(name, rung_overrides(stem, profile, fraction), str(folder / f"{name}.ipynb"), str(folder / name))
        )
    return points


def _claims_table(stem: str, profile: str, point: Point) -> Path:
    return Path(point.figures) / stem / Path(profile).stem / "claims.csv"


def finished(stem: str, profile: str, point: Point) -> bool:
    """Whether a rung's outputs can stand for it: its notebook, claims and manifest exist, and the manifest records this
    rung's parameters and this commit on a clean tree. A changed profile (e.g. more repeats) or changed code reruns
    the rung (its cached trainings make that cheap); only an interrupted ladder at the same commit skips work."""
    table = _claims_table(stem, profile, point)
    manifest = table.with_name("manifest.json")
    if not (table.is_file() and manifest.is_file() and Path(point.notebook).is_file()):
        return False
    recorded = json.loads(manifest.read_text())
    expected = params_mod.load(stem, profile, point.values).model_dump(mode="json")
    drop_threads = lambda values: {k: v for k, v in values.items() if k != "threads"}  # the rung's own choice
    commit = git_commit()
    return (
        drop_threads(recorded.get("params", {})) == drop_threads(expected)
        and not commit.endswith("+dirty")
        and recorded.get("git_commit") == commit
    )


def margins(claims: dict[float, pd.DataFrame], settings: dict[float, dict[str, int]]) -> pd.DataFrame:
    """The long table of the ladder: per claim and fraction, the budget settings, its verdict, n and margin with
    interval."""
    rows = []
    for fraction, table in sorted(claims.items()):
        setting = ", ".join(f"{k}={v}" for k, v in settings[fraction].items()) or "the profile's"
        missing = [c for c in CLAIM_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"claims table at budget {fraction:g} lacks columns {', '.join(missing)}")
        for record in table.to_dict("records"):
            rows.append(
                {
                    "id": record["id"],
                    "budget": fraction,
                    "settings": setting,
                    "verdict": record["verdict"],
                    "n": record["n"],
                    "margin": record["margin"],
                    "margin_low": record["margin_low"],
                    "margin_high": record["margin_high"],
                }
            )
    return pd.DataFrame(
        rows, columns=["id", "budget", "settings", "verdict", "n", "margin", "margin_low", "margin_high"]
    )


def trend(ladder: pd.DataFrame) -> pd.Series:
    """Per claim: `toward the paper` when its margin grows from the smallest to the full budget by more than the
    half-width of its full-budget interval, `away` when it shrinks by more, `flat` otherwise; empty when a rung has
    no margin (not measured, does not transfer)."""
    out = {}
    for claim, rows in ladder.groupby("id", sort=False):
        rows = rows.sort_values("budget")
        values = pd.to_numeric(rows["margin"], errors="coerce")
        if len(rows) < 2 or values.isna().any():
            out[claim] = ""
            continue
        last = rows.iloc[-1]
        noise = (float(last["margin_high"]) - float(last["margin_low"])) / 2
        change = float(values.iloc[-1] - values.iloc[0])
        out[claim] = TRENDS[0] if change > noise else TRENDS[1] if change < -noise else TRENDS[2]
    return pd.Series(out, name="trend")


def plot(ladder: pd.DataFrame, stem: str) -> Any:
    """One panel per claim: its margin (claim's side positive) against budget, with the 95% interval."""
    import matplotlib.pyplot as plt

    measured = ladder.dropna(subset=["margin"])
    ids = list(dict.fromkeys(measured["id"]))
    columns = min(4, max(1, len(ids)))
    rows = max(1, math.ceil(len(ids) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    for ax, claim in zip(axes.flat, ids):
        part = measured[measured["id"] == claim].sort_values("budget")
        margin = part["margin"].astype(float)
        ax.errorbar(
            part["budget"],
            margin,
            yerr=[margin - part["margin_low"].astype(float), part["margin_high"].astype(float) - margin],
            marker="o",
            capsize=3,
        )
        ax.axhline(0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(claim, fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(part["budget"], [f"{b:g}" for b in part["budget"]])
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(ids) :]:
        ax.axis("off")
    fig.suptitle(f"{stem}: claim margin (claim's side > 0) against budget fraction", fontsize=9)
    fig.tight_layout()
    return fig


def run_ladder(
    stem: str,
    profile: str = "default",
    fractions: Sequence[float] = FRACTIONS,
    *,
    publish: bool = False,
    jobs: int = 1,
) -> dict[str, Path]:
    """Run every rung, `jobs` at a time in separate processes sharing the cores (and the artifact cache), then write
    ladder.csv (margins against budget), claims.csv (the full-budget claims with their trend) and ladder.png/.pdf into
    figures/<stem>/ladder/ (with `publish`) or runs/<stem>/ladder/. A failed rung stops the ladder with its error;
    a rerun reuses the rungs that ran with the same parameters at the same commit (`finished`)."""
    from .plots import save_figure

    points = plan(stem, profile, fractions)
    tables = {f: _claims_table(stem, profile, p) for f, p in zip(sorted(fractions), points)}
    todo = [p for p in points if not finished(stem, profile, p)]
    threads = job_threads(jobs, len(todo))
    home, cache = str(project_root()), str(cache_root())
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each rung is its own process; threads only wait on them
        futures = [pool.submit(run_point, stem, profile, point, threads, home, cache) for point in todo]
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"ladder {stem}"):
            result = future.result()
            if result.status != "ok":
                for other in futures:
                    other.cancel()
                raise RuntimeError(f"ladder rung {result.name} of {stem} failed: {result.error}")
    claims = {f: pd.read_csv(table, keep_default_na=False, na_values=[""]) for f, table in tables.items()}
    ladder = margins(claims, {f: p.values for f, p in zip(sorted(fractions), points)})
    full = claims[max(claims)].set_index("id")
    full["trend"] = trend(ladder)
    with publishing_outputs(publish):
        paths = save_table(ladder, stem, LADDER, "ladder", floatfmt=2, caption=f"{stem}: claim margins vs budget")
        save_table(full, stem, LADDER, "claims", floatfmt=2)
        figure = save_figure(plot(ladder, stem), stem, LADDER, "ladder")
    return {"table": paths["csv"], "figure": figure["png"]}
