"""The Adversary Critic claims on hand-made tables: each holds on paper-like numbers, fails when its table says
otherwise beyond the sampling noise, is undecided inside it, and every miss or unmeasured claim carries a measured
reason; the budget keys; the doubtful-reference marking."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from advlib import claims as C
from advlib import params, report
from advlib.experiments.adversary_critic import DEFENSE_LABELS, CriticStudy, claims, paper_vs_run_table, table1

NETWORKS = ["mlp1200", "lenet5"]
ATTACKS = ["DeepFool", "CW", "Our"]
RHO = {"reference": 0.13, "at": 0.22, "vat": 0.24, "margin": 0.26, "critic": 0.29}  # Table 1a's ordering
ERROR = {"reference": 1.5, "at": 0.9, "vat": 0.85, "margin": 0.85, "critic": 1.2}
TARGET = {"reference": 0.6, "at": 19.0, "vat": 35.0, "margin": 60.0, "critic": 88.0}  # Table 2a
PROXY = "proxy annotator (robust classifier ensemble; no human answers in this run)"
IDS = ["critic_largest_rho", "critic_beats_at", "small_error_cost", "critic_changes_label", "reference_keeps_label"]
BUDGET = "epochs trained: critic 6 (with pre-training), baselines 5 (paper: 100); runs per model: 2 (paper: 10)"


def _runs(rho=None, error=None, seeds=(0, 1), spread=0.002, epochs=5):
    """table1_runs as CriticStudy.table1_runs writes it, each value +-spread over the runs (so its mean is exact);
    rho/error: {(network, defense): value} overrides."""
    rows = []
    for network in NETWORKS:
        for defense in RHO:
            for seed in seeds:
                jitter = spread * (1 if seed % 2 else -1) if len(seeds) > 1 else 0.0
                r = (rho or {}).get((network, defense), RHO[defense])
                e = (error or {}).get((network, defense), ERROR[defense])
                rows.append(
                    {
                        "network": network,
                        "defense": defense,
                        "seed": seed,
                        "epochs": epochs + (defense == "critic"),
                        "test images": 1000,
                        "error": e + jitter,
                        **{f"rho {a}": r + jitter for a in ATTACKS},
                        **{f"success {a}": 100.0 for a in ATTACKS},
                    }
                )
    return pd.DataFrame(rows)


def _table2(target=None, images=200, nearest=False):
    """Table 2 as CriticStudy.table2 returns it, indexed by (network, defense label); `nearest` adds the
    nearest-neighbour annotator's columns (half the proxy's target share)."""
    rows = []
    for n in NETWORKS:
        for d in TARGET:
            value = (target or {}).get((n, d), TARGET[d])
            row = {"network": n, "defense": DEFENSE_LABELS[d], "target_percent": value, "original_percent": 100 - value}
            if nearest:
                row |= {"nn_target_percent": value / 2, "nn_original_percent": 100 - value / 2}
            rows.append(row | {"images": images})
    return pd.DataFrame(rows).set_index(["network", "defense"])


def _evaluate(runs=None, table2=None, networks=NETWORKS, annotator=PROXY):
    runs = _runs() if runs is None else runs
    tables = {
        "table1_runs": runs,
        "table2": _table2() if table2 is None else table2,
        **{f"table1{letter}": table1(runs, n, ATTACKS) for letter, n in zip("ab", networks)},
    }
    out = C.evaluate_claims(claims(networks, annotator), tables).set_index("id")
    assert ((out.verdict == C.HOLDS) | (out.reason.str.strip().str.len() > 0)).all()  # every miss has a reason
    return out


def test_every_claim_holds_on_paper_like_tables():
    out = _evaluate()
    assert list(out.index) == IDS
    assert (out.verdict == C.HOLDS).all(), out[["verdict", "reason"]]
    assert (out.reason == "").all()
    assert out.loc["critic_largest_rho", "evidence"].startswith("24 of 24 comparisons hold; closest: ")
    # the closest rival of the critic is Margin (0.26 vs 0.29), on 2 runs a side
    assert "rho DeepFool: Our 0.29 vs Margin [19] 0.26: +0.030" in out.loc["critic_largest_rho", "evidence"]
    assert out.loc["critic_largest_rho", "n"] == 2
    assert out.loc["critic_beats_at", "evidence"].startswith("6 of 6 comparisons hold")
    # the mean error over 2 runs: the same 1000 test images scored twice count once, plus the pooled run spread
    assert (
        "mlp1200 Our error 1.2% vs Reference error 1.5%: -0.3 [-1.3, +0.7] points on 2 runs (t over runs, pooled "
        "spread; claim: difference < 1)" in out.loc["small_error_cost", "evidence"]
    )
    assert "Our 88.0% vs Margin [19] 60.0%: +28.0" in out.loc["critic_changes_label", "evidence"]
    assert (
        "Reference 0.5% vs 10%: -9.5 [-9.9, -7.2] points on 200 images (Wilson"
        in (out.loc["reference_keeps_label", "evidence"])
    )
    assert out.loc["critic_largest_rho", "cites"] == "table1a, table1b, table1_runs"


def test_largest_rho_fails_when_a_baseline_leads_beyond_the_run_to_run_spread():
    out = _evaluate(_runs(rho={("lenet5", "margin"): 0.31}))
    row = out.loc["critic_largest_rho"]
    assert row["verdict"] == C.FAILS
    # each defense's runs are +-0.002: pooled variance 8e-6 over the 5 defenses (5 dof); -0.020 +- t(0.975, 5) x
    # sqrt(8e-6 x (1/2 + 1/2)) = 2.571 x 0.00283 = 0.0073
    assert row["reason"].startswith("the 95% interval excludes the claim (3 of 24 comparisons fail): lenet5 rho ")
    assert (
        "Our 0.29 vs Margin [19] 0.31: -0.020 [-0.027, -0.013] on 2 runs (Student t, pooled spread; claim: "
        "difference > 0)" in (row["reason"])
    )
    assert row["reason"].endswith(BUDGET)  # the note: this run's budget against the paper's
    assert row["margin"] == pytest.approx(-0.02) and row["margin_high"] < 0
    assert out.loc["critic_beats_at", "verdict"] == C.HOLDS  # the critic still beats adversarial training


def test_largest_rho_is_undecided_when_the_runs_spread_wider_than_the_gap():
    row = _evaluate(_runs(rho={("lenet5", "margin"): 0.291}, spread=0.05)).loc["critic_largest_rho"]
    assert row["verdict"] == C.UNDECIDED
    assert "Our 0.29 vs Margin [19] 0.291: -0.001 [-0.183, +0.181] on 2 runs" in row["reason"]
    assert "runs would decide it at the observed effect" in row["reason"]


def test_beats_at_fails_when_adversarial_training_is_more_robust():
    out = _evaluate(_runs(rho={("mlp1200", "at"): 0.40}))
    row = out.loc["critic_beats_at"]
    assert row["verdict"] == C.FAILS
    assert "(3 of 6 comparisons fail): mlp1200 rho " in row["reason"]
    assert "Our 0.29 vs AT [7] 0.4: -0.110" in row["reason"]
    assert out.loc["critic_largest_rho", "verdict"] == C.FAILS  # AT now leads as well


def test_error_cost_holds_fails_and_is_undecided_against_the_one_point_margin():
    out = _evaluate(_runs(error={("lenet5", "critic"): 3.5, ("lenet5", "reference"): 0.8}))
    row = out.loc["small_error_cost"]
    assert row["verdict"] == C.FAILS
    # 35 vs 8 errors of the same 1000 images in each run: the images' variance (one success and failure added)
    # 1e4 (36/1002)(966/1002)/1002 + 1e4 (9/1002)(993/1002)/1002 = 0.346 + 0.089 points^2, the pooled run spread
    # 8e-6 with 5 dof adds next to nothing: +2.7 +- 1.96 x 0.659 = [+1.4, +4.0], entirely above the claimed 1 point
    assert (
        "lenet5 Our error 3.5% vs Reference error 0.8%: +2.7 [+1.4, +4.0] points on 2 runs (t over runs, pooled "
        "spread; claim: difference < 1)" in row["reason"]
    )
    assert "the paper's costs: LeNet-5 0.29 points" in row["reason"] and row["reason"].endswith(BUDGET)
    assert row["n"] == 2 and row["margin"] == pytest.approx(1 - 2.7)
    close = _evaluate(_runs(error={("lenet5", "critic"): 2.0, ("lenet5", "reference"): 1.2})).loc["small_error_cost"]
    assert close["verdict"] == C.UNDECIDED  # +0.8 [-0.3, +1.9]: reaches past 1 point
    assert "+0.8 [-0.3, +1.9] points on 2 runs" in close["reason"]
    # the spread of the runs is tiny: the shared test images' error alone reaches the boundary, so runs cannot help
    assert "more runs alone would not decide it: the test images' error alone reaches the boundary" in close["reason"]
    # 3.0% vs 0.8% is undecided ([+1.0, +3.4]); counted as 2000 images (two runs on the same 1000), it would fail
    wide = _evaluate(_runs(error={("lenet5", "critic"): 3.0, ("lenet5", "reference"): 0.8})).loc["small_error_cost"]
    assert wide["verdict"] == C.UNDECIDED and "+2.2 [+1.0, +3.4] points on 2 runs" in wide["reason"]
    assert C.Comparison.accuracies(("a", 3.0), ("b", 0.8), "<", 2000, threshold=1.0).verdict == C.FAILS
    one_run = _evaluate(_runs(seeds=(0,))).loc["small_error_cost"]
    assert one_run["verdict"] == C.NOT_MEASURED and "only 1 run per model" in one_run["reason"]


def test_table2_claims_fail_beyond_the_noise_and_say_who_labelled():
    out = _evaluate(table2=_table2({("mlp1200", "margin"): 95.0, ("lenet5", "reference"): 30.0}, nearest=True))
    changes = out.loc["critic_changes_label"]
    assert changes["verdict"] == C.FAILS
    assert "mlp1200 Our 88.0% vs Margin [19] 95.0%: -7.0 [-12.5, -1.5] points on 200 images" in changes["reason"]
    # the note: the nearest-neighbour annotator on the same images, then who labelled
    assert (
        "nearest-neighbour annotator on the same images: mlp1200 Our 44.0% (highest other: Margin [19] 47.5%)"
        in (changes["reason"])
    )
    assert changes["reason"].endswith("cannot establish a claim about human perception")
    keeps = out.loc["reference_keeps_label"]
    assert keeps["verdict"] == C.FAILS
    # Wilson on 60 of 200: 30% against 10%, the whole interval above it
    assert "lenet5 Reference 30.0% vs 10%: +20.0 [" in keeps["reason"] and "on 200 images (Wilson" in keeps["reason"]
    assert "mlp1200 Reference 0.3%; lenet5 Reference 15.0%" in keeps["reason"]


def test_table2_claims_are_undecided_on_a_small_sample():
    out = _evaluate(table2=_table2({("mlp1200", "margin"): 90.0, ("lenet5", "reference"): 12.0}, images=50))
    changes = out.loc["critic_changes_label"]
    assert changes["verdict"] == C.UNDECIDED
    assert "mlp1200 Our 88.0% vs Margin [19] 90.0%: -2.0 [-14.7, +10.7] points on 50 images" in changes["reason"]
    assert "images would decide it" in changes["reason"]
    assert "nearest-neighbour" not in changes["reason"]  # this Table 2 carries no nn_* columns
    keeps = out.loc["reference_keeps_label"]
    assert keeps["verdict"] == C.UNDECIDED
    assert "lenet5 Reference 12.0% vs 10%: +2.0 [-4.4, +13.8] points on 50 images (Wilson" in keeps["reason"]


def test_human_labels_carry_no_proxy_caveat():
    human = "human annotators (MTurk results file)"
    out = _evaluate(table2=_table2({("lenet5", "reference"): 30.0}), annotator=human)
    reason = out.loc["reference_keeps_label", "reason"]
    assert reason.endswith(f"labels by {human}") and "cannot establish" not in reason


def test_rho_claims_are_not_measured_with_one_run_and_table1_claims_with_one_network():
    one_run = _evaluate(_runs(seeds=(0,)))
    for cid in ("critic_largest_rho", "critic_beats_at"):
        assert one_run.loc[cid, "verdict"] == C.NOT_MEASURED
        assert "only 1 run per model: one run gives no run-to-run spread" in one_run.loc[cid, "reason"]
        assert "runs per model: 1 (paper: 10)" in one_run.loc[cid, "reason"]
    one_net = _evaluate(networks=NETWORKS[:1])
    for cid in ("critic_largest_rho", "critic_beats_at", "small_error_cost"):
        assert one_net.loc[cid, "verdict"] == C.NOT_MEASURED
        assert one_net.loc[cid, "cites"] == "table1a, table1_runs"
        assert "this profile has no table1b (its networks: mlp1200)" in one_net.loc[cid, "reason"]
    assert one_net.loc["critic_changes_label", "verdict"] == C.HOLDS


def test_missing_rows_or_broken_images_leave_a_claim_not_measured():
    no_at = _runs()
    no_at = _evaluate(no_at[no_at.defense != "at"])
    assert no_at.loc["critic_beats_at", "verdict"] == C.NOT_MEASURED
    assert (
        "table1a has no AT [7] row; table1b has no AT [7] row in this profile" in no_at.loc["critic_beats_at", "reason"]
    )
    assert no_at.loc["critic_largest_rho", "verdict"] == C.HOLDS
    unbroken = _runs()
    unbroken.loc[(unbroken.network == "lenet5") & (unbroken.defense == "vat") & (unbroken.seed == 1), "rho CW"] = (
        math.nan
    )
    reason = _evaluate(unbroken).loc["critic_largest_rho", "reason"]
    assert "lenet5 rho CW: 1 run(s) of VAT [16] with a broken image" in reason
    no_critic = _table2().drop(index="Our", level="defense")
    out = _evaluate(table2=no_critic)
    assert out.loc["critic_changes_label", "verdict"] == C.NOT_MEASURED
    assert "Table 2 has no Our row for mlp1200, lenet5" in out.loc["critic_changes_label", "reason"]
    assert out.loc["reference_keeps_label", "verdict"] == C.HOLDS


def test_budget_keys_are_whole_numbers_of_the_default_profile_and_accepted_as_overrides(halved_budget):
    p = params.load("adversary_critic", "default", halved_budget("adversary_critic"))
    assert p.train.epochs == 2 and p.critic.epochs == 4 and p.data.n_train == 1000
    assert set(CriticStudy.budget) == {"train.epochs", "critic.epochs", "data.n_train"}  # the evaluation is kept


def test_the_doubtful_reference_error_is_marked_in_paper_vs_run():
    refs = report.load_references("adversary_critic")
    assert "Reference / error" in refs["table1a"]["doubtful"] and ".46" in refs["table1a"]["note"]
    parts = {
        "table1a": report.paper_vs_run("adversary_critic", "table1a", pd.DataFrame({"error": {"Reference": 1.4}})),
        "table1b": report.paper_vs_run("adversary_critic", "table1b", pd.DataFrame({"error": {"Reference": 0.7}})),
    }
    table = paper_vs_run_table(parts)
    marked = table.loc[table.note != "", "note"]
    assert list(marked.index) == [("table1a", "Reference / error")] and marked.iloc[0].startswith(
        "doubtful: printed '.46'"
    )
    assert table.loc[("table1a", "Reference / error"), "paper"] == pytest.approx(0.46)  # kept as printed


def test_a_doubtful_key_that_is_not_a_value_is_refused(monkeypatch):
    from advlib.experiments import adversary_critic

    monkeypatch.setattr(
        adversary_critic, "load_references", lambda stem: {"table1a": {"values": {}, "doubtful": {"Nope / error": "x"}}}
    )
    with pytest.raises(ValueError, match="Nope / error"):
        paper_vs_run_table({"table1a": pd.DataFrame({"paper": [1.0]}, index=["Reference / error"])})
