"""Strength in Numbers claims without training: on hand-made tables shaped like the run's (filled with the paper's
numbers, in percent) every claim holds given enough images, fails with the measured comparison where the tables
contradict it, is undecided where the sample cannot resolve it, and reads exactly the tables it cites."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from advlib import claims as C
from advlib import ladder, params
from advlib.experiments.strength_in_numbers import EnsembleStudy

SCORES = ["clean", "IFGSM5", "PGD5", "PGD20", "blackbox"]
TABLE1A = {
    "Baseline": [94, 34, 15, 1, 27],
    "Ensemble2": [94, 59, 44, 30, 22],
    "Ensemble4": [91, 50, 40, 34, 26],
    "SingleAdv": [82, 55, 44, 43, 80],
    "DoubleAdv": [83, 57, 46, 44, 82],
    "Ensemble2Adv": [85, 62, 55, 52, 83],
    "Ensemble4Adv": [87, 66, 58, 53, 85],
}
TABLE1B = {
    "Baseline": [95, 57, 29, 9, 26],
    "Ensemble2": [95, 65, 52, 38, 22],
    "Ensemble4": [93, 60, 48, 43, 24],
    "SingleAdv": [84, 57, 46, 45, 81],
    "DoubleAdv": [85, 60, 48, 47, 84],
    "Ensemble2Adv": [87, 64, 56, 52, 85],
    "Ensemble4Adv": [88, 67, 58, 52, 86],
}
MANY = 100_000  # enough images to resolve the paper's 1-point gaps


def claims(n_eval: int, dataset: str = "cifar10") -> list[C.Claim]:
    """The study's claims for a run on `n_eval` evaluation images of `dataset` (the ci profile: 2 epochs, one seed,
    so Table 1a and 1b rest on `n_eval` images; making the study loads no data, trains nothing)."""
    return EnsembleStudy(params.load("strength_in_numbers", "ci", {"n_eval": n_eval, "data.name": dataset})).claims()


def _steps_curve(finals: dict[str, float], steps: int = 8) -> pd.DataFrame:
    """Figure 2c's long format: accuracy falling linearly from 90% at step 0 to `finals` at the last step."""
    return pd.DataFrame(
        [
            {"attack": "pgd_linf", "steps": s, "accuracy": 90 + (final - 90) * s / steps, "system": name}
            for name, final in finals.items()
            for s in range(steps + 1)
        ]
    )


def _figure3(last_drop: float) -> pd.DataFrame:
    rows = []
    for target in ("ensemble", "mean member loss (transfer)", "remove softmax"):
        for steps, accuracy in ((5, 80.0), (25, 60.0), (50, 50.0 + last_drop), (100, 50.0)):
            rows.append({"attack on": target, "steps": steps, "accuracy": accuracy})
    return pd.DataFrame(rows)


def _tables() -> dict[str, pd.DataFrame]:
    table1b = pd.DataFrame(TABLE1B, index=SCORES).T
    table1b.insert(0, "epoch", 6.0)
    table2 = pd.DataFrame(
        {
            "clean accuracy": [63.8, 79.1, 69.1, 49.0, 87.6, 86.4],
            "adversarial accuracy": [34.4, 43.9, 38.7, 23.7, 49.7, 48.7],
            "steps": 100,
        },
        index=["Model 1", "Model 2", "Model 3", "Model 4", "Ensemble", "Ensemble (remove softmax)"],
    )
    return {
        "table1a": pd.DataFrame(TABLE1A, index=SCORES).T,
        "table1b": table1b,
        "table1c": pd.DataFrame(
            {"IFGSM": [16, 46, 47, 13, 55, 49], "PGD": [4, 44, 47, 2, 52, 47]},
            index=["Baseline", "SingleAdv", "DoubleAdv", "Ensemble2", "Ensemble2Adv", "Separate2Adv"],
        ),
        "figure2c": _steps_curve({"Baseline": 2, "Ensemble2": 3, "SingleAdv": 44, "Ensemble2Adv": 51}),
        "table2": table2,
        "figure3": _figure3(last_drop=0.5),
    }


def _verdicts(tables: dict[str, pd.DataFrame], n_eval: int = MANY, dataset: str = "cifar10") -> pd.DataFrame:
    return C.evaluate_claims(claims(n_eval, dataset), tables).set_index("id")


def test_every_claim_holds_on_the_papers_numbers_given_enough_images():
    table = _verdicts(_tables())
    assert (table.verdict == C.HOLDS).all(), table[table.verdict != C.HOLDS]
    assert (table.reason == "").all()
    assert table.loc["adv_beats_plain", "evidence"].startswith("12 of 12 comparisons hold; closest: SingleAdv 43.0%")
    assert table.loc["ensemble_beats_members", "evidence"].startswith(
        "4 of 4 comparisons hold; closest: Ensemble 49.7%"
    )
    assert (
        "Separate2Adv 47.0% vs midpoint of SingleAdv and Ensemble2Adv 48.0%: -1.0"
        in (table.loc["separate_near_single", "evidence"])
    )
    assert table.loc["plateau", "evidence"].startswith("ensemble at 50 steps 50.5% vs ensemble at 100 steps 50.0%")
    assert "claim: difference < 2" in table.loc["plateau", "evidence"]
    assert "claim: |difference| <= 2" in table.loc["remove_softmax_close", "evidence"]
    assert "claim: difference <= 0" in table.loc["pgd_beats_ifgsm", "evidence"]  # "at least as strong": a tie holds
    assert table.loc["adv_beats_plain", "n"] == MANY


def _broken() -> dict[str, pd.DataFrame]:
    """The paper's tables changed so that no claim holds."""
    t = {k: v.copy() for k, v in _tables().items()}
    t["table1a"].loc["Ensemble2Adv", "PGD20"] = 40.0  # below SingleAdv and DoubleAdv
    t["table1a"].loc["DoubleAdv", "PGD20"] = 42.0  # below SingleAdv: more parameters did not help
    t["table1a"].loc["Ensemble4", ["PGD20", "blackbox"]] = [45.0, 90.0]  # a plain model above an adversarial one
    t["table1a"].loc["SingleAdv", "PGD5"] = 60.0  # PGD5 weaker than IFGSM5
    t["table1b"].loc[["SingleAdv", "DoubleAdv", "Ensemble2Adv", "Ensemble4Adv"], "clean"] = 96.0
    t["table1b"].loc[["Baseline", "Ensemble2", "Ensemble4"], "epoch"] = 1.0
    t["table1c"].loc["Separate2Adv", "PGD"] = 52.0  # equal to Ensemble2Adv
    t["figure2c"] = _steps_curve({"Baseline": 20, "Ensemble2": 3, "SingleAdv": 55, "Ensemble2Adv": 51})
    t["table2"].loc["Model 2", "adversarial accuracy"] = 55.0  # a member above the ensemble
    t["table2"].loc["Ensemble (remove softmax)", "adversarial accuracy"] = 40.0  # 9.7 points apart
    t["figure3"] = _figure3(last_drop=6.0)
    return t


def test_every_claim_fails_with_the_measured_comparison_on_contradicting_tables():
    table = _verdicts(_broken())
    assert (table.verdict == C.FAILS).all(), table[table.verdict != C.FAILS]
    assert table.reason.str.startswith("the 95% interval excludes the claim").all(), table.reason
    assert (table.margin_high < 0).all() and (table.drop(index="clean_cost").n == MANY).all()
    assert table.loc["clean_cost", "n"] == 3 * MANY  # the plain mean counts 3 systems' images (the smaller group)
    reason = table.reason
    assert "(2 of 2 comparisons fail): Ensemble2Adv 40.0% vs SingleAdv 43.0%: -3.0" in reason["ensemble_beats_double"]
    assert "DoubleAdv 42.0% vs SingleAdv 43.0%: -1.0" in reason["more_parameters_help"]
    assert reason["more_parameters_help"].endswith("the paper's own gaps are 1 point")
    assert "(3 of 12 comparisons fail): Ensemble2Adv 40.0% vs Ensemble4 45.0%: -5.0" in reason["adv_beats_plain"]
    assert "SingleAdv 80.0% vs Ensemble4 90.0%: -10.0" in reason["adv_beats_plain_blackbox"]
    assert "SingleAdv PGD5 60.0% vs SingleAdv IFGSM5 55.0%: +5.0" in reason["pgd_beats_ifgsm"]
    assert "adversarial mean 96.0% vs non-adversarial mean 94.3%: +1.7" in reason["clean_cost"]
    assert "epochs 1, 1, 1 of 6 for the non-adversarial models" in reason["clean_cost"]  # where Table 1b took them
    assert "Separate2Adv 52.0% vs midpoint of SingleAdv and Ensemble2Adv 48.0%: +4.0" in reason["separate_near_single"]
    assert reason["separate_near_single"].endswith(
        "Separate2Adv is +8.0 points from SingleAdv and +0.0 from Ensemble2Adv"
    )
    assert "Baseline at 8 steps 20.0% vs 10%: +10.0" in reason["plain_ensembles_collapse"]
    assert "points lost from 4 to 8 steps: Baseline +35.0, Ensemble2 +43.5" in reason["plain_ensembles_collapse"]
    assert (
        "(8 of 8 comparisons fail): Ensemble2Adv at 8 steps 51.0% vs SingleAdv at 8 steps 55.0%: -4.0"
        in (reason["gap_over_steps"])
    )
    assert "ensemble at 50 steps 56.0% vs ensemble at 100 steps 50.0%: +6.0" in reason["plateau"]
    assert reason["plateau"].endswith("this profile's longest run is 100 steps")
    assert "Ensemble 49.7% vs Model 2 55.0%: -5.3" in reason["ensemble_beats_members"]
    assert "Ensemble 49.7% vs Ensemble (remove softmax) 40.0%: +9.7" in reason["remove_softmax_close"]


def test_a_sample_too_small_for_the_papers_gaps_leaves_claims_undecided_and_says_how_many_images_decide_them():
    table = _verdicts(_tables(), n_eval=150)
    held = ["adv_beats_plain_blackbox", "pgd_beats_ifgsm", "clean_cost", "plain_ensembles_collapse"]
    assert (table.loc[held, "verdict"] == C.HOLDS).all(), table.loc[held]
    undecided = table.index.drop(held)
    assert (table.loc[undecided, "verdict"] == C.UNDECIDED).all(), table.loc[undecided]
    assert table.loc[undecided, "reason"].str.contains("images would decide it at the observed effect").all()
    assert "(2 of 12 comparisons straddle); about 238 images would decide it" in table.loc["adv_beats_plain", "reason"]
    assert "about 13338 images would decide it" in table.loc["remove_softmax_close", "reason"]
    assert (
        "Ensemble 50.0% vs Ensemble (remove softmax) 48.7%: +1.3 [-9.9, +12.6] points on 150 images"
        in (table.loc["remove_softmax_close", "reason"])
    )
    # the same gaps on enough images decide every one of them
    assert (_verdicts(_tables()).loc[undecided, "verdict"] == C.HOLDS).all()


def test_on_mnist_the_clean_cost_does_not_transfer_and_reports_what_it_measured():
    table = _verdicts(_tables(), n_eval=150, dataset="mnist5k")
    row = table.loc["clean_cost"]
    assert row.verdict == C.DOES_NOT_TRANSFER and row.evidence == ""
    assert "measured on CIFAR-10 and does not transfer to MNIST" in row.reason
    assert "costs 8.2 points of clean accuracy" in row.reason
    assert "adversarial mean 86.0% vs non-adversarial mean 94.2%: -8.2 [-11.8, -4.7] points on 450 images" in row.reason
    assert "among the final 1 of 2: epochs 6, 6, 6 of 6" in row.reason
    assert (table.drop(index="clean_cost").verdict != C.DOES_NOT_TRANSFER).all()
    broken = _verdicts(_broken(), n_eval=150, dataset="mnist5k").loc["clean_cost"]
    assert broken.verdict == C.DOES_NOT_TRANSFER and "costs no clean accuracy" in broken.reason


def test_separate_near_single_follows_the_measured_order_of_single_and_ensemble():
    """Closer to SingleAdv is below the midpoint when Ensemble2Adv is above SingleAdv, above it when the run reverses
    them."""
    t = _tables()
    t["table1c"] = t["table1c"].astype(float)
    t["table1c"].loc[["SingleAdv", "Ensemble2Adv", "Separate2Adv"], "PGD"] = [52.0, 44.0, 50.0]
    row = _verdicts(t).loc["separate_near_single"]
    assert row.verdict == C.HOLDS and "claim: difference > 0" in row.evidence
    t["table1c"].loc["Separate2Adv", "PGD"] = 46.0  # now closer to Ensemble2Adv
    row = _verdicts(t).loc["separate_near_single"]
    assert row.verdict == C.FAILS and "Separate2Adv is -6.0 points from SingleAdv and +2.0 from Ensemble2Adv" in (
        row.reason
    )


def test_plain_collapse_is_against_10_percent_with_the_wilson_interval():
    t = _tables()
    t["figure2c"] = _steps_curve({"Baseline": 2, "Ensemble2": 9, "SingleAdv": 44, "Ensemble2Adv": 51})
    assert _verdicts(t, n_eval=150).loc["plain_ensembles_collapse", "verdict"] == C.UNDECIDED  # 9% of 150
    assert _verdicts(t, n_eval=5000).loc["plain_ensembles_collapse", "verdict"] == C.HOLDS  # 9% of 5,000
    t["figure2c"] = _steps_curve({"Baseline": 2, "Ensemble2": 11, "SingleAdv": 44, "Ensemble2Adv": 51})
    row = _verdicts(t).loc["plain_ensembles_collapse"]
    assert row.verdict == C.FAILS and "Ensemble2 at 8 steps 11.0% vs 10%: +1.0" in row.reason


@pytest.mark.parametrize("claim", claims(n_eval=MANY), ids=lambda c: c.id)
def test_each_claim_reads_only_and_all_of_its_cited_tables(claim):
    """evaluate_claims raises UncitedTable if a measure reads a table it does not cite and ValueError if it leaves
    one unread; the claim holds on its cited tables alone."""
    tables = _tables()
    assert set(claim.cites) <= set(tables)
    row = C.evaluate_claims([claim], {k: v for k, v in tables.items() if k in claim.cites} | {"other": None})
    assert row.verdict.iloc[0] == C.HOLDS


def test_a_missing_system_is_not_measured_with_a_reason():
    tables = _tables()
    tables["table1c"] = tables["table1c"].drop(index="Separate2Adv")  # e.g. a profile without Separate2Adv
    row = _verdicts(tables).loc["separate_near_single"]
    assert row.verdict == C.NOT_MEASURED and "Separate2Adv" in row.reason


def test_verdicts_count_images_so_float32_ties_are_ties():
    """The review's miss on float noise: PGD5 and IFGSM5 both 33 of 150 images (22%) with different last bits: a tie
    of counts, which "at least as strong" accepts; one image more for PGD5 is inside the noise of 150 images."""
    t = _tables()
    t["table1a"] = t["table1a"].astype(float)
    t["table1a"].loc[["SingleAdv", "DoubleAdv", "Ensemble2Adv", "Ensemble4Adv"], ["IFGSM5", "PGD5"]] = [
        22.000000005,
        22.000000129,
    ]
    row = _verdicts(t, n_eval=150).loc["pgd_beats_ifgsm"]
    assert row.verdict == C.HOLDS and "22.0% vs SingleAdv IFGSM5 22.0%: +0.0" in row.evidence
    t["table1a"].loc["SingleAdv", "PGD5"] = 100 * float(np.float32(34) / np.float32(150))  # one image more
    row = _verdicts(t, n_eval=150).loc["pgd_beats_ifgsm"]
    assert row.verdict == C.UNDECIDED and "SingleAdv PGD5 22.7% vs SingleAdv IFGSM5 22.0%: +0.7" in row.reason


def test_budget_keys_scale_the_default_profile():
    assert ladder.rung_overrides("strength_in_numbers", "default", 0.5) == {
        "train.epochs": 3,
        "data.n_train": 500,
        "train_attack.steps": 4,
    }
