"""Tests for advlib.claims: the intervals against hand computations and scipy, the three verdicts, claims as data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from advlib import claims as C
from advlib.claims import Claim, Comparison


def test_accuracies_use_the_agresti_caffo_interval_on_counts():
    # 60% of 100 vs 50% of 100: p1 = 61/102, p2 = 51/102, half = 1.96 sqrt(p1 q1/102 + p2 q2/102) = 13.6 points
    c = Comparison.accuracies(("a", 60.0), ("b", 50.0), ">", 100)
    p1, p2 = 61 / 102, 51 / 102
    half = 1.959964 * math.sqrt(p1 * (1 - p1) / 102 + p2 * (1 - p2) / 102) * 100
    assert c.difference == pytest.approx(10.0)
    assert (c.low, c.high) == pytest.approx((10 - half, 10 + half), abs=1e-4)
    assert round(half, 1) == 13.6 and c.verdict == C.UNDECIDED
    assert Comparison.accuracies(("a", 60.0), ("b", 50.0), ">", 1000).verdict == C.HOLDS
    assert Comparison.accuracies(("a", 50.0), ("b", 60.0), ">", 1000).verdict == C.FAILS


def test_float_noise_cannot_break_a_tie_of_counts():
    # 198 of 900 scored images, once through float32 noise each way: the same count, an exact tie
    c = Comparison.accuracies(("a", 22.000000129), ("b", 22.000000005), ">=", 900)
    assert c.difference == 0.0 and c.verdict == C.HOLDS  # ties count as ties: "not below" holds on 0 = 0
    assert Comparison.accuracies(("a", 22.000000129), ("b", 22.000000005), ">", 900).verdict == C.UNDECIDED
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        Comparison.accuracies(("a", 101.0), ("b", 1.0), ">", 10)
    with pytest.raises(ValueError, match="n=0"):
        C.correct_count(50.0, 0)


def test_paired_agresti_min_interval_and_verdicts():
    # 1000 images, 40 broken only by the left attack... left succeeds alone on 40, right alone on 10
    c = Comparison.paired("regroup", "softmax", 40, 10, 1000, ">")
    b, d, m = 40.5, 10.5, 1002
    half = 1.959964 * math.sqrt((b + d) - (b - d) ** 2 / m) / m * 100
    assert c.difference == pytest.approx(3.0)
    assert (c.low, c.high) == pytest.approx((100 * (b - d) / m - half, 100 * (b - d) / m + half), abs=1e-4)
    assert c.verdict == C.HOLDS and c.test == "paired Agresti-Min"
    # the same accuracies unpaired would straddle: pairing is what decides it
    assert Comparison.accuracies(("regroup", 53.0), ("softmax", 50.0), ">", 1000).verdict == C.UNDECIDED
    assert Comparison.paired("a", "b", 5, 5, 100, ">").verdict == C.UNDECIDED
    with pytest.raises(ValueError, match="sum to at most n=10"):
        Comparison.paired("a", "b", 6, 6, 10, ">")


def test_intervals_of_a_difference_of_accuracies_stay_within_plus_minus_100_points():
    # one image each side: p = 1/3 and 2/3 of 3, half-width 1.96 sqrt(2 (2/9) / 3) = 75.44 points: 0% vs 100% would
    # reach -175.44
    c = Comparison.accuracies(("a", 0.0), ("b", 100.0), ">=", 1)
    assert c.difference == -100.0 and (c.low, c.high) == pytest.approx((-100.0, -24.56), abs=0.01)
    p = Comparison.paired("a", "b", 0, 1, 1, ">=")  # Agresti-Min: -33.3 +- 84.3 points, low -117.7 unclamped
    assert p.low == -100.0 and p.high == pytest.approx(51.01, abs=0.01)
    assert Comparison.accuracies(("a", 100.0), ("b", 0.0), "<=", 1).high == 100.0


def test_against_a_constant_uses_the_wilson_interval():
    c = Comparison.against(("pgd", 12.0), 10.0, ">", 200)
    low, high = (100 * v for v in stats.binomtest(24, 200).proportion_ci(method="wilson"))
    assert (c.low + 10, c.high + 10) == pytest.approx((low, high), abs=1e-3)
    assert c.verdict == C.UNDECIDED
    assert Comparison.against(("pgd", 30.0), 10.0, ">", 200).verdict == C.HOLDS
    assert Comparison.against(("pgd", 2.0), 10.0, "<", 200).verdict == C.HOLDS


def test_means_use_welch_t():
    a, b = [0.40, 0.42, 0.44], [0.30, 0.31, 0.35, 0.33]
    c = Comparison.means(("ours", a), ("at", b), ">")
    welch = stats.ttest_ind(a, b, equal_var=False).confidence_interval()
    assert (c.low, c.high) == pytest.approx((welch.low, welch.high))
    assert c.verdict == C.HOLDS and c.sample == "runs"
    one = Comparison.means(("spread", [1.0, 2.0, 3.0]), ("limit", 5.0), "<")
    assert one.high == pytest.approx(2 - 5 + stats.t.ppf(0.975, 2) * math.sqrt(1 / 3))
    with pytest.raises(ValueError, match="at least two"):
        Comparison.means(("a", [1.0]), ("b", [1.0, 2.0]), ">")
    # a pooled spread replaces both sides' own: Student's t with its degrees of freedom
    pooled = Comparison.means(("ours", [1.0, 3.0]), ("at", [0.0, 2.0]), ">", spread=(2.0, 5.0))
    assert pooled.high - pooled.difference == pytest.approx(stats.t.ppf(0.975, 5) * math.sqrt(2.0 * (1 / 2 + 1 / 2)))
    assert pooled.test == "Student t, pooled spread" and pooled.sample == "runs" and pooled.difference == 1.0
    with pytest.raises(ValueError, match="degrees of freedom > 0"):
        Comparison.means(("a", [1.0, 2.0]), ("b", [1.0, 2.0]), ">", spread=(1.0, 0.0))


def _images(mean: float, n: int) -> float:
    """The images' sampling variance (points squared) of a mean accuracy on n images, one success and failure added."""
    p = (round(mean * n / 100) + 1) / (n + 2)
    return 1e4 * p * (1 - p) / (n + 2)


def test_runs_add_the_run_spread_to_the_images_with_welch_satterthwaite_dof():
    a, b = C.Runs("a", (30.0, 34.0, 32.0), 900), C.Runs("b", (20.0, 28.0), 900)
    c = Comparison.runs(a, b, ">")
    va, vb = np.var(a.values, ddof=1) / 3, np.var(b.values, ddof=1) / 2
    variance = va + vb + _images(32.0, 900) + _images(24.0, 900)
    dof = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 1) * (variance / (va + vb)) ** 2  # the image parts count as known
    half = stats.t.ppf(0.975, dof) * math.sqrt(variance)
    assert c.difference == pytest.approx(8.0) and (c.low, c.high) == pytest.approx((8 - half, 8 + half))
    assert c.verdict == C.UNDECIDED and c.n == 2 and c.sample == "runs" and c.test == "t over runs"
    assert "a 32.0% vs b 24.0%: +8.0" in c.describe() and "points on 2 runs (t over runs;" in c.describe()
    # the same means as single accuracies on 900 images each: the images alone would call it decided
    assert Comparison.accuracies(("a", 32.0), ("b", 24.0), ">", 900).verdict == C.HOLDS


def test_runs_against_a_constant_and_a_contrast_merge_each_systems_coefficients():
    joint = {s: C.Runs(f"joint {s}", values, 300) for s, values in (("3", (60.0, 64.0)), ("5", (50.0, 52.0)))}
    one = Comparison.runs(joint["3"], 10.0, ">")
    assert one.right == "10" and one.test == "one-sample t over runs" and "vs 10%: +52.0" in one.describe()
    nine = C.Runs("joint 9", (49.0, 47.0), 300)
    drop = Comparison.runs(
        ("drop 3->5", {joint["3"]: 1.0, joint["5"]: -1.0}), ("drop 5->9", {joint["5"]: 1.0, nine: -1.0}), ">"
    )
    assert (drop.left_value, drop.right_value, drop.difference) == pytest.approx((11.0, 3.0, 8.0))
    parts = [(np.var(r.values, ddof=1) / 2, c) for r, c in ((joint["3"], 1), (joint["5"], -2), (nine, 1))]
    variance = sum(
        c**2 * (v + _images(np.mean(r.values), 300)) for (v, c), r in zip(parts, (joint["3"], joint["5"], nine))
    )
    dof = sum(c**2 * v for v, c in parts) ** 2 / sum((c**2 * v) ** 2 for v, c in parts)
    half = stats.t.ppf(0.975, dof * (variance / sum(c**2 * v for v, c in parts)) ** 2) * math.sqrt(variance)
    assert drop.high - drop.difference == pytest.approx(half)  # joint 5 counted once, with coefficient -2
    with pytest.raises(ValueError, match="two different systems are named 'joint 3'"):
        Comparison.runs(joint["3"], C.Runs("joint 3", (1.0, 2.0), 300), ">")


def test_runs_to_decide_shrink_only_the_run_part_of_the_variance():
    # 8 points^2 of run spread (shrinks with runs), the images' part about 4 (does not)
    spread = (8.0, 20.0)
    left, right = C.Runs("a", (30.0, 30.0), 900, spread), C.Runs("b", (24.0, 24.0), 900, spread)
    c = Comparison.runs(left, right, ">")
    images = _images(30.0, 900) + _images(24.0, 900)
    assert c.fixed_share == pytest.approx(images / (images + 8.0))
    half, distance = (c.high - c.low) / 2, c.difference
    needed = c.images_to_decide()
    assert c.verdict == C.UNDECIDED and needed is not None and needed > 2
    q2 = half**2 / (images + 8.0)  # the squared t quantile, held at its value here
    assert q2 * (images + 8.0 * 2 / needed) <= distance**2 < q2 * (images + 8.0 * 2 / (needed - 1))
    close = Comparison.runs(C.Runs("a", (25.0, 25.0), 900, spread), right, ">")  # 1 point: images alone reach it
    assert close.verdict == C.UNDECIDED and close.images_to_decide() is None
    with pytest.raises(ValueError, match="fixed_share must be in"):
        Comparison("a", "b", 0.0, 0.0, ">", 0.0, 0.0, -1.0, 1.0, 2, "t over runs", fixed_share=1.0)


def test_a_single_run_needs_a_pooled_spread():
    with pytest.raises(ValueError, match="one training run has no run-to-run spread"):
        C.Runs("separately", (70.0,), 900)
    spread = C.pooled_spread([[1.0, 2.0, 3.0], [10.0, 12.0], [50.0]])  # squares about each mean: 2 + 2; 2 + 1 dof
    assert spread == pytest.approx((4 / 3, 3.0))
    with pytest.raises(KeyError, match="no system was trained more than once"):
        C.pooled_spread([[1.0], [2.0]])
    single = C.Runs("separately", (70.0,), 900, spread=(16.0, 10.0))
    twice = C.Runs("joint", (60.0, 66.0), 900, spread=(16.0, 10.0))  # the pooled spread replaces its own
    c = Comparison.runs(single, twice, ">")
    variance = 16.0 + 16.0 / 2 + _images(70.0, 900) + _images(63.0, 900)
    half = stats.t.ppf(0.975, variance**2 / (24.0**2 / 10)) * math.sqrt(variance)
    assert c.high - c.difference == pytest.approx(half) and c.test == "t over runs, pooled spread"
    with pytest.raises(ValueError, match="variance >= 0 with degrees of freedom > 0"):
        C.Runs("a", (1.0,), 10, spread=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        C.Runs("a", (120.0, 1.0), 10)


def test_an_identity_is_exact_with_no_interval():
    c = Comparison.exact(("union", 7.8125), ("pgd", 4.6875), "<=", 64)
    assert (c.low, c.high) == (c.difference, c.difference) and c.verdict == C.FAILS
    assert Comparison.exact(("union", 4.6875), ("pgd", 4.6875), "<=", 64).verdict == C.HOLDS
    assert "(exact; claim: difference <= 0)" in c.describe()


def test_variances_use_the_f_interval_on_the_log_ratio():
    a, b = [1.0, 2.0, 3.0, 4.0], [1.0, 5.0, 9.0, 13.0]  # variances 5/3 and 80/3: ratio 1/16
    c = Comparison.variances(("9 attacks", a), ("3 attacks", b), "<")
    assert math.exp(c.difference) == pytest.approx(1 / 16)
    assert math.exp(c.high) == pytest.approx((1 / 16) / stats.f.ppf(0.025, 3, 3))
    assert c.verdict == C.HOLDS and c.left_value == pytest.approx(math.sqrt(5 / 3)) and c.sample == "runs"
    assert Comparison.variances(("a", [1.0, 2.0, 3.0]), ("b", [1.0, 2.5, 4.0]), "<").verdict == C.UNDECIDED
    with pytest.raises(ValueError, match="must be > 0"):
        Comparison.variances(("a", [1.0, 1.0]), ("b", [1.0, 2.0]), "<")


@pytest.mark.parametrize(
    ("relation", "threshold", "interval", "verdict"),
    [
        (">", 0.0, (1.0, 2.0, 3.0), C.HOLDS),
        (">", 0.0, (-1.0, 1.0, 3.0), C.UNDECIDED),
        (">", 0.0, (-3.0, -1.0, 0.0), C.FAILS),
        (">", 2.0, (1.0, 2.5, 3.0), C.UNDECIDED),
        (">=", 0.0, (-1.0, 0.0, 1.0), C.HOLDS),
        (">=", 0.0, (-2.0, -0.5, 1.0), C.UNDECIDED),
        (">=", 0.0, (-2.0, -1.0, -0.1), C.FAILS),
        ("<", 10.0, (2.0, 5.0, 8.0), C.HOLDS),
        ("<=", 0.0, (-1.0, 0.5, 2.0), C.UNDECIDED),
        ("within", 5.0, (-2.0, 1.0, 4.0), C.HOLDS),
        ("within", 5.0, (-2.0, 4.0, 10.0), C.UNDECIDED),
        ("within", 5.0, (6.0, 8.0, 10.0), C.FAILS),
        ("within", 5.0, (-10.0, -8.0, -6.0), C.FAILS),
    ],
)
def test_verdict_rules(relation, threshold, interval, verdict):
    low, d, high = interval
    c = Comparison("a", "b", 0.0, 0.0, relation, threshold, d, low, high, 100, "Agresti-Caffo")
    assert c.verdict == verdict
    point, mlo, mhi = c.margin
    assert mlo <= point <= mhi


def test_images_to_decide_scales_as_one_over_sqrt_n():
    c = Comparison.accuracies(("a", 60.0), ("b", 50.0), ">", 100)
    needed = c.images_to_decide()
    half = (c.high - c.low) / 2
    assert needed == math.ceil(100 * (half / 10) ** 2)
    assert Comparison.accuracies(("a", 60.0), ("b", 50.0), ">", needed + 20).verdict == C.HOLDS
    assert Comparison.accuracies(("a", 50.0), ("b", 50.0), ">", 100).images_to_decide() is None


def test_bad_relation_and_interval_are_errors():
    with pytest.raises(ValueError, match="relation '=>' is not one of"):
        Comparison.accuracies(("a", 1.0), ("b", 1.0), "=>", 10)
    with pytest.raises(ValueError, match="does not contain"):
        Comparison("a", "b", 0, 0, ">", 0, 5.0, 0.0, 1.0, 10, "x")


TABLES = {"table1": pd.DataFrame({"acc": [99.0, 45.0, 44.0]}, index=["clean", "pgd", "fgsm"])}


def _acc(t, row):
    return float(t["table1"].loc[row, "acc"])


def test_evaluate_claims_verdicts_margins_and_reasons():
    claims = [
        Claim(
            "c1",
            "Clean accuracy is above 95% (Table 1).",
            ("table1",),
            lambda t: Comparison.against(("clean", _acc(t, "clean")), 95, ">", 1000),
        ),
        Claim(
            "c2",
            "PGD is at least as strong as FGSM (Table 1).",
            ("table1",),
            lambda t: Comparison.accuracies(("pgd", _acc(t, "pgd")), ("fgsm", _acc(t, "fgsm")), "<=", 100),
            note=lambda t: "the FGSM step is large",
        ),
        Claim(
            "c3",
            "Transfer attacks fail (Table 3).",
            ("table3",),
            lambda t: Comparison.against(("x", t["table3"]), 10, "<", 10),
        ),
        Claim(
            "c4",
            "Needs 19 voters (Table 1).",
            ("table1",),
            lambda t: (_acc(t, "clean"), _raise(C.DoesNotTransfer("8 voters here"))),
        ),
        Claim(
            "c5",
            "PGD is far below clean (Table 1).",
            ("table1",),
            lambda t: [
                Comparison.accuracies((r, _acc(t, r)), ("clean", _acc(t, "clean")), "<", 1000) for r in ("pgd", "fgsm")
            ],
        ),
    ]
    table = C.evaluate_claims(claims, TABLES)
    assert list(table.columns) == C.CLAIM_COLUMNS
    assert table["verdict"].tolist() == [C.HOLDS, C.UNDECIDED, C.NOT_MEASURED, C.DOES_NOT_TRANSFER, C.HOLDS]
    assert table.loc[0, "reason"] == "" and table.loc[0, "n"] == 1000
    assert "straddles" in table.loc[1, "reason"] and "images would decide it" in table.loc[1, "reason"]
    assert table.loc[1, "reason"].endswith("the FGSM step is large")
    assert table.loc[2, "reason"] == "missing result 'table3'"
    assert table.loc[3, "reason"] == "8 voters here"
    assert table.loc[4, "evidence"].startswith("2 of 2 comparisons hold; closest: pgd 45.0%")
    assert table.loc[1, "margin_low"] <= table.loc[1, "margin"] <= table.loc[1, "margin_high"]
    assert (
        C.verdict_counts(table) == "5 claims: 2 hold, 1 undecided, 1 does not transfer, 1 not measured at this profile"
    )


def _raise(error):
    raise error


def test_combining_all_and_majority():
    hold = Comparison.accuracies(("a", 90.0), ("b", 10.0), ">", 100)
    fail = Comparison.accuracies(("a", 10.0), ("b", 90.0), ">", 100)
    open_ = Comparison.accuracies(("a", 52.0), ("b", 50.0), ">", 100)
    assert C.combine([hold, open_])[0] == C.UNDECIDED
    assert C.combine([hold, open_, fail]) == (C.FAILS, fail)
    assert C.combine([hold, hold, fail], "majority")[0] == C.HOLDS
    assert C.combine([hold, fail], "majority")[0] == C.FAILS
    assert C.combine([hold, open_, open_], "majority")[0] == C.UNDECIDED
    with pytest.raises(ValueError, match="measured no comparison"):
        C.combine([])


def test_claim_reading_an_uncited_table_is_an_error():
    tables = {"table1a": pd.DataFrame({"clean": [1.0]}), "table1b": pd.DataFrame({"clean": [2.0]})}
    # the Strength in Numbers defect: the text cites Table 1b, the measure reads Table 1a
    bad = Claim(
        "clean_cost",
        "Adversarial training costs clean accuracy (Table 1b).",
        ("table1b",),
        lambda t: Comparison.against(("a", t["table1a"]["clean"].iloc[0]), 5, "<", 10),
    )
    with pytest.raises(C.UncitedTable, match="table1a.*cites: table1b"):
        C.evaluate_claims([bad], tables)


def test_claim_must_read_every_table_it_cites_and_ids_are_unique():
    tables = {"table1a": pd.DataFrame({"clean": [1.0]}), "table2": pd.DataFrame({"clean": [2.0]})}
    measure = lambda t: Comparison.against(("a", t["table1a"]["clean"].iloc[0]), 5, "<", 10)
    lazy = Claim("c", "Something (Tables 1a and 2).", ("table1a", "table2"), measure)
    with pytest.raises(ValueError, match="cites table2 but its measure does not read it"):
        C.evaluate_claims([lazy], tables)
    one = Claim("a", "x (Table 1a)", ("table1a",), measure)
    with pytest.raises(ValueError, match="duplicate claim ids: a"):
        C.evaluate_claims([one, one], tables)


def test_claim_text_must_name_the_cited_artifact():
    m = lambda t: []
    with pytest.raises(ValueError, match="cites table1b but its text does not name them"):
        Claim("c", "Adversarial training costs clean accuracy (Table 1a).", ("table1b",), m)
    with pytest.raises(ValueError, match="cites no table"):
        Claim("c", "x", (), m)
    with pytest.raises(ValueError, match="quantifier 'some' is not one of all, majority"):
        Claim("c", "x (Table 1)", ("table1",), m, quantifier="some")
    for text, name in (
        ("(Tables 1, 2, 9-12)", "table9"),
        ("(Figure 2c)", "figure2c"),
        ("(Table 1a / 1b)", "table1b"),
        ("(Tables 3 and 4)", "table4"),
    ):
        Claim("c", text, (name,), m)  # accepted
    with pytest.raises(ValueError):
        Claim("c", "(Table 11)", ("table1",), m)


def test_verdict_counts_rejects_unknown_verdicts():
    with pytest.raises(ValueError, match="unknown verdicts"):
        C.verdict_counts(pd.DataFrame({"verdict": ["holds", "does not hold"]}))
    assert C.verdict_counts(pd.DataFrame({"verdict": np.array([], dtype=object)})) == "0 claims: none"
