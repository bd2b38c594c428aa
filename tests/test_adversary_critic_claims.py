"""The Adversary Critic claims on hand-made tables: each holds on paper-like numbers, each fails when its table says
otherwise, and every miss or unmeasured claim carries a measured reason; the doubtful-reference marking."""

from __future__ import annotations

import pandas as pd
import pytest

from advlib import report
from advlib.experiments.adversary_critic import DEFENSE_LABELS, claims, paper_vs_run_table, table1

NETWORKS = ["mlp1200", "lenet5"]
ATTACKS = ["DeepFool", "CW", "Our"]
RHO = {"reference": 0.13, "at": 0.22, "vat": 0.24, "margin": 0.26, "critic": 0.29}  # Table 1a's ordering
ERROR = {"reference": 1.5, "at": 0.9, "vat": 0.85, "margin": 0.85, "critic": 1.2}
TARGET = {"reference": 0.6, "at": 19.0, "vat": 35.0, "margin": 60.0, "critic": 88.0}  # Table 2a
PROXY = "proxy annotator (robust classifier ensemble; no human answers in this run)"


def _runs(rho=None, error=None, seeds=(0, 1), spread=0.005, epochs=5):
    """table1_runs as CriticStudy.table1_runs writes it; rho/error: {(network, defense): value} overrides."""
    rows = []
    for network in NETWORKS:
        for defense in RHO:
            for seed in seeds:
                jitter = spread * (1 if seed % 2 else -1)
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


def _table2(target=None, images=200):
    """Table 2 as CriticStudy.table2 returns it, indexed by (network, defense label)."""
    rows = [
        {
            "network": n,
            "defense": DEFENSE_LABELS[d],
            "target_percent": (target or {}).get((n, d), TARGET[d]),
            "original_percent": 100 - (target or {}).get((n, d), TARGET[d]),
            "images": images,
        }
        for n in NETWORKS
        for d in TARGET
    ]
    return pd.DataFrame(rows).set_index(["network", "defense"])


def _evaluate(runs=None, table2=None, networks=NETWORKS, annotator=PROXY):
    runs = _runs() if runs is None else runs
    tables = {
        "table1_runs": runs,
        "table2": _table2() if table2 is None else table2,
        **{f"table1{letter}": table1(runs, n, ATTACKS) for letter, n in zip("ab", networks)},
    }
    out = report.evaluate_claims(claims(networks, annotator), tables).set_index("id")
    assert ((out.verdict == report.HOLDS) | (out.reason.str.strip().str.len() > 0)).all()  # every miss has a reason
    return out


def test_every_claim_holds_on_paper_like_tables():
    out = _evaluate()
    assert list(out.index) == [
        "critic_largest_rho",
        "critic_beats_at",
        "small_error_cost",
        "critic_changes_label",
        "reference_keeps_label",
    ]
    assert (out.verdict == report.HOLDS).all(), out[["verdict", "reason"]]
    assert (
        "lenet5 rho CW: Reference 0.130, AT [7] 0.220, VAT [16] 0.240, Margin [19] 0.260, Our 0.290"
        in out.loc["critic_largest_rho", "evidence"]
    )
    assert "mlp1200: Reference 1.50% -> Our 1.20% (on 1000 images)" in out.loc["small_error_cost", "evidence"]


def test_largest_rho_fails_when_a_baseline_leads_and_says_by_how_much():
    out = _evaluate(_runs(rho={("lenet5", "margin"): 0.31}))
    assert out.loc["critic_largest_rho", "verdict"] == report.DOES_NOT_HOLD
    assert out.loc["critic_beats_at", "verdict"] == report.HOLDS  # the critic still beats adversarial training
    reason = out.loc["critic_largest_rho", "reason"]
    assert (
        "lenet5 rho CW: Margin [19] 0.310 vs Our 0.290 (gap 0.020, beyond the run-to-run std 0.007 / 0.007)" in reason
    )
    assert "mlp1200" not in reason.split(";")[0]  # only the misses are listed
    assert (
        "epochs trained: critic 6 (with pre-training), baselines 5 (paper: 100); runs per model: 2 (paper: 10)"
        in reason
    )
    within = _evaluate(_runs(rho={("lenet5", "margin"): 0.291}, spread=0.05)).loc["critic_largest_rho", "reason"]
    assert "gap 0.001, within the run-to-run std" in within


def test_beats_at_fails_when_adversarial_training_is_more_robust():
    out = _evaluate(_runs(rho={("mlp1200", "at"): 0.40}))
    assert out.loc["critic_beats_at", "verdict"] == report.DOES_NOT_HOLD
    assert "mlp1200 rho DeepFool: AT [7] 0.400 vs Our 0.290" in out.loc["critic_beats_at", "reason"]


def test_error_cost_fails_beyond_one_point_with_the_sampling_noise():
    out = _evaluate(_runs(error={("lenet5", "critic"): 3.0, ("lenet5", "reference"): 0.8}))
    assert out.loc["small_error_cost", "verdict"] == report.DOES_NOT_HOLD
    reason = out.loc["small_error_cost", "reason"]
    assert reason.startswith("lenet5: Our 3.00% vs Reference 0.80%, " + report.proportion_gap(3.0, 0.8, 1000))
    assert "outside the noise" in reason and "epochs trained" in reason


def test_table2_claims_fail_when_the_table_says_otherwise():
    out = _evaluate(table2=_table2({("mlp1200", "margin"): 90.0, ("lenet5", "reference"): 30.0}, images=50))
    assert out.loc["critic_changes_label", "verdict"] == report.DOES_NOT_HOLD
    reason = out.loc["critic_changes_label", "reason"]
    assert reason.startswith("mlp1200: Margin [19] 90.0% vs Our 88.0%, " + report.proportion_gap(90.0, 88.0, 50))
    assert "inside the noise" in reason and "proxy annotator" in reason
    assert out.loc["reference_keeps_label", "verdict"] == report.DOES_NOT_HOLD
    reason = out.loc["reference_keeps_label", "reason"]
    # Agresti-Coull on 15 of 50: (15 + 1.92) / 53.84 = 31.4% +- 1.96 sqrt(.314 x .686 / 53.84) = 12.4 points
    assert reason.startswith(
        "lenet5: 30.0% of 50 images labelled as the target, 95% interval 19.0-43.8% (entirely above 10%)"
    )
    edge = _evaluate(table2=_table2({("mlp1200", "reference"): 12.0}, images=50)).loc["reference_keeps_label", "reason"]
    assert "reaching below 10%: this sample size does not resolve it" in edge


def test_table1_claims_are_not_measured_with_one_run_or_one_network():
    one_run = _evaluate(_runs(seeds=(0,)))
    for cid in ("critic_largest_rho", "critic_beats_at", "small_error_cost"):
        assert one_run.loc[cid, "verdict"] == report.NOT_MEASURED
        assert one_run.loc[cid, "reason"].startswith("only 1 run per model: the run-to-run spread is unknown")
    one_net = _evaluate(networks=NETWORKS[:1])
    assert one_net.loc["critic_largest_rho", "verdict"] == report.NOT_MEASURED
    assert one_net.loc["critic_largest_rho", "reason"] == "this profile has no table1b (its networks: mlp1200)"
    no_at = _runs()
    no_at = _evaluate(no_at[no_at.defense != "at"])
    assert no_at.loc["critic_beats_at", "verdict"] == report.NOT_MEASURED
    assert (
        no_at.loc["critic_beats_at", "reason"] == "table1a has no AT [7] row; table1b has no AT [7] row in this profile"
    )
    assert no_at.loc["critic_largest_rho", "verdict"] == report.HOLDS


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
