"""The quickstart's sanity claims, checked on the tables the notebook saves (attack_suite, accuracy_vs_eps,
accuracy_vs_steps, union)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from advlib.report import Claim, proportion_gap

Tables = Mapping[str, Any]


def union_table(clean_accuracy: float, robust_accuracy: float, attacks: int) -> pd.DataFrame:
    """The union result as a one-row table (percent), so the claims can cite it like any other output."""
    return pd.DataFrame([{"attacks": attacks, "clean": 100 * clean_accuracy, "union": 100 * robust_accuracy}])


def _largest_rise(accuracy: pd.Series) -> tuple[int, float]:
    """Position and size (points) of the largest increase between neighbouring points of a curve."""
    rises = accuracy.diff().iloc[1:]
    position = int(rises.to_numpy().argmax()) + 1
    return position, float(rises.iloc[position - 1])


def _pgd_fgsm_pair(suite: pd.Series) -> tuple[str, str]:
    """The suite's labels of Linf PGD and FGSM at a common eps (KeyError, i.e. not measured, if there is none)."""
    for label in suite.index:
        if label.startswith("fgsm@") and (pgd := "pgd_linf@" + label.split("@", 1)[1]) in suite.index:
            return pgd, label
    raise KeyError("pgd_linf and fgsm at a common eps")


def claims(n_images: int) -> list[Claim]:
    """Sanity claims every robustness paper relies on; a miss's reason says whether it is inside the sampling noise
    of the `n_images` evaluated images."""

    def suite(t: Tables) -> pd.Series:
        return t["attack_suite"].set_index("attack")["accuracy"]

    def pgd_fgsm(t: Tables) -> tuple[float, float]:
        pgd, fgsm = _pgd_fgsm_pair(suite(t))
        return float(suite(t)[pgd]), float(suite(t)[fgsm])

    def eps_reason(t: Tables) -> str:
        curve = t["accuracy_vs_eps"].reset_index(drop=True)
        i, rise = _largest_rise(curve["accuracy"])
        return (
            f"largest rise {rise:+.1f} points from eps {curve['eps'].iloc[i - 1]:g} to {curve['eps'].iloc[i]:g}; "
            + proportion_gap(curve["accuracy"].iloc[i], curve["accuracy"].iloc[i - 1], n_images)
        )

    def steps(t: Tables) -> pd.Series:
        return t["accuracy_vs_steps"]["accuracy"].reset_index(drop=True)

    def union_gap(t: Tables) -> tuple[float, float]:
        return float(t["union"]["union"].iloc[0]), float(suite(t).drop("clean").min())

    return [
        Claim(
            "eps_monotone",
            "Robust accuracy does not increase as the Linf budget grows (accuracy_vs_eps).",
            ("accuracy_vs_eps",),
            lambda t: bool(t["accuracy_vs_eps"]["accuracy"].is_monotonic_decreasing),
            lambda t: " > ".join(f"{a:.1f}" for a in t["accuracy_vs_eps"]["accuracy"]),
            eps_reason,
        ),
        Claim(
            "pgd_beats_fgsm",
            "Iterative PGD is at least as strong as single-step FGSM at the same eps (attack_suite).",
            ("attack_suite",),
            lambda t: pgd_fgsm(t)[0] <= pgd_fgsm(t)[1],
            lambda t: "PGD {:.1f}% vs FGSM {:.1f}%".format(*pgd_fgsm(t)),
            lambda t: proportion_gap(*pgd_fgsm(t), n_images),
        ),
        Claim(
            "steps_help_attacker",
            "More PGD steps lower robust accuracy (accuracy_vs_steps).",
            ("accuracy_vs_steps",),
            lambda t: steps(t).iloc[-1] < steps(t).iloc[1],
            lambda t: f"1 step {steps(t).iloc[1]:.1f}% -> {len(steps(t)) - 1} steps {steps(t).iloc[-1]:.1f}%",
            lambda t: proportion_gap(steps(t).iloc[-1], steps(t).iloc[1], n_images),
        ),
        Claim(
            "union_below_each",
            "The union of attacks, computed by its own cascade, is at most as accurate as the "
            "strongest single attack of the suite (union, attack_suite).",
            ("union", "attack_suite"),
            lambda t: union_gap(t)[0] <= union_gap(t)[1],
            lambda t: "union {:.1f}% vs best single {:.1f}%".format(*union_gap(t)),
            lambda t: (
                f"the cascade kept {union_gap(t)[0] - union_gap(t)[1]:+.1f} points of images that one attack of the suite broke; with every "
                "sample's draws keyed to its position the two should agree, so this is a defect to report"
            ),
        ),
    ]
