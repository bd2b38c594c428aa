"""Tests for advlib.ladder: rungs scale the declared budget keys, margins and trends from claims tables."""

from __future__ import annotations

import pandas as pd
import pytest

from advlib import ladder, params
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
