"""MAT claims and references without training: each claim holds on hand-made tables shaped like the run's (filled
with the paper's numbers) and fails, with a measured reason, on tables where it does not; the references flag the
published unions that no evaluation can produce, and paper-vs-run leaves them out of the comparison."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from advlib import params, report
from advlib.experiments.base import MissingResult
from advlib.experiments.mimo_adversarial_training import MATStudy, mark_excluded, union_violations

STEM = "mimo_adversarial_training"
SUBS = {"l1": "Sub-model 1 (l1)", "l2": "Sub-model 2 (l2)", "linf": "Sub-model 3 (linf)"}
NORM_COLUMN = {"l1": "L1 sub-model", "l2": "L2 sub-model", "linf": "Linf sub-model"}


@pytest.fixture(scope="module")
def p():
    return params.load(STEM, "ci", {"n_eval": 1000})  # the paper's evaluation size, which the hand-made counts use


def _values(artifact: str) -> pd.DataFrame:
    """A reference table as the run lays it out: attacks as rows, systems as columns."""
    return pd.DataFrame(report.load_references(STEM)[artifact]["values"]).T


def _transfer(system: str, norm: str) -> pd.DataFrame:
    """A run-shaped transfer table (count and ratio %) from the paper's counts, sub-models in Section 4.1 order."""
    ref = report.load_references(STEM)[f"transfer_{system}_{norm}"]["values"]
    ensemble = "MAT" if system == "mat" else "Vanilla Ensemble"
    columns = [SUBS["l1"], SUBS["l2"], SUBS["linf"], ensemble]
    value = lambda row, column: ref[row][
        "ensemble" if column == ensemble else NORM_COLUMN[column[column.index("(") + 1 : -1]]
    ]
    rows = {SUBS[norm]: "source sub-model", ensemble: "ensemble", "No Attack": "No Attack"}
    counts = pd.DataFrame({label: {c: value(row, c) for c in columns} for label, row in rows.items()}).T
    ratios = counts.copy().astype(float)
    for label in (SUBS[norm], ensemble):
        ratios.loc[label] = 100 * counts.loc[label] / counts.loc[label, label]
    ratios.loc["No Attack"] = math.nan
    return pd.concat({"count": counts, "ratio %": ratios}, axis=1)


def _tables(p) -> dict[str, pd.DataFrame]:
    table3 = _values("table3").rename(
        columns={"Sub-model 1": SUBS["l1"], "Sub-model 2": SUBS["l2"], "Sub-model 3": SUBS["linf"]}
    )
    diagnostics = pd.DataFrame(
        [
            {"epoch": e, "member": m, "cross_gradient_ratio": 0.5 / (e + 1), "sign_disagreement": 0.1}
            for e in range(3)
            for m in ("1 (l1)", "2 (l2)", "3 (linf)")
        ]
    )
    tables = {"table3": table3, "table4": _values("table4"), "table8": _values("table8"), "figures1_4": diagnostics}
    tables.update({f"transfer_{s}_{n}": _transfer(s, n) for s in ("vanilla", "mat") for n in p.transfer_attacks})
    return tables


def _broken(p) -> dict[str, pd.DataFrame]:
    """The same tables changed so that no claim holds."""
    t = {k: v.copy() for k, v in _tables(p).items()}
    t["table4"].loc["All linf", ["MAT", "Vanilla Ensemble"]] = [0.0, 90.0]  # MAT below vanilla and MSD; vanilla robust
    t["table3"].loc["PGD linf", [SUBS["linf"], "MAT"]] = [5.0, 4.0]  # the Linf sub-model not robust; MAT below it
    for base, variant in (("Linf AT", "MAT(Linf)"), ("L2 AT", "MAT(L2)"), ("MSD", "MAT+MSD")):
        t["table8"][variant] = t["table8"][base] - 1
    for n in p.transfer_attacks:
        t[f"transfer_vanilla_{n}"], t[f"transfer_mat_{n}"] = t[f"transfer_mat_{n}"], t[f"transfer_vanilla_{n}"]
    t["figures1_4"]["cross_gradient_ratio"] = 0.1 * (t["figures1_4"]["epoch"] + 1)
    return t


def test_every_claim_holds_on_the_papers_numbers(p):
    table = report.evaluate_claims(MATStudy(p).claims(), _tables(p)).set_index("id")
    assert (table["verdict"] == report.HOLDS).all(), table[table.verdict != report.HOLDS][
        ["evidence", "reason"]
    ].to_string()
    assert "mat_costs_one_at" not in table.index  # Table 6 follows from the code: not a claim
    assert {
        "mat_beats_msd_all_linf",
        "mat_submodels_robust",
        "table8_mat_mostly_higher",
        "table8_mat_msd_linf_l1",
    } <= set(table.index)
    assert table.loc["table8_mat_mostly_higher", "evidence"] == "13 higher, 0 tied of 19 rows"  # the paper's own count
    assert "82.3 vs MSD 56.3" in table.loc["mat_beats_msd_all_linf", "evidence"]


def test_every_claim_can_fail_and_a_miss_says_why(p):
    table = report.evaluate_claims(MATStudy(p).claims(), _broken(p)).set_index("id")
    assert (table["verdict"] == report.DOES_NOT_HOLD).all(), table[table.verdict != report.DOES_NOT_HOLD][
        ["evidence"]
    ].to_string()
    assert table["reason"].str.strip().astype(bool).all()
    # measured reasons: the gap against the sampling noise of n_eval images and the budget against the paper's
    for cid in (
        "mat_beats_vanilla_unions",
        "mat_beats_msd_all_linf",
        "vanilla_fails_linf",
        "mat_submodels_robust",
        "mat_above_weakest_submodel",
        "mat_ensemble_resists_transfer",
        "table8_mat_mostly_higher",
        "table8_mat_msd_linf_l1",
    ):
        assert f"on {p.n_eval} images" in table.loc[cid, "reason"], cid
        assert (
            f"trained {p.train.epochs} epochs" in table.loc[cid, "reason"]
            and "the paper: 25 epochs" in table.loc[cid, "reason"]
        ), cid
    assert "Sub-model 3 (linf) - standard, PGD linf" in table.loc["mat_submodels_robust", "reason"]
    assert (
        "N_ii = 231 (MAT) and 327 (vanilla)" in table.loc["mat_low_transfer", "reason"]
    )  # swapped: the L2 source counts
    assert "member 1 (l1): 0.100 -> 0.300" in table.loc["cross_gradients_shrink", "reason"]


def test_claims_without_their_tables_are_not_measured(p):
    tables = {k: v for k, v in _tables(p).items() if k != "table8"}
    tables["figures1_4"] = tables["figures1_4"][tables["figures1_4"].epoch == 0]
    table = report.evaluate_claims(MATStudy(p).claims(), tables).set_index("id")
    for cid in ("table8_mat_mostly_higher", "table8_mat_msd_linf_l1", "cross_gradients_shrink"):
        assert table.loc[cid, "verdict"] == report.NOT_MEASURED and table.loc[cid, "reason"], cid
    assert "only 1 epoch" in table.loc["cross_gradients_shrink", "reason"]


def test_impossible_published_unions_are_flagged_and_left_out():
    refs = report.load_references(STEM)  # the `excluded` key is accepted beside values
    for artifact in ("table4", "table5", "table8"):
        assert set(refs[artifact].get("excluded") or {}) == set(union_violations(refs[artifact]["values"])), artifact
    assert set(refs["table4"]["excluded"]) == {"All attacks / L2 AT", "All attacks / Vanilla Ensemble"}
    run = _values("table4")
    table = mark_excluded("table4", report.paper_vs_run(STEM, "table4", run))
    for key in refs["table4"]["excluded"]:
        assert table.loc[key, "paper"] == refs["table4"]["values"]["All attacks"][key.split(" / ")[1]]
        assert math.isnan(table.loc[key, "difference"]) and table.loc[key, "note"].startswith("excluded: impossible")
    assert table.loc["All linf / MAT", "difference"] == 0 and table.loc["All linf / MAT", "note"] == ""


def test_union_violations_on_hand_made_values():
    values = {
        "clean": {"A": 99.0},
        "PGD": {"A": 10.0, "B": 5.0},
        "HSJ": {"A": 20.0, "B": 6.0},
        "All x": {"A": 10.0, "B": 7.0},
        "S&P": {"A": 50.0, "B": 50.0},
        "All y": {"A": 50.0, "B": 40.0},
        "All attacks": {"A": 12.0, "B": 5.0},
    }
    bad = union_violations(values)
    assert set(bad) == {"All x / B", "All attacks / A"}
    assert "above PGD (5%)" in bad["All x / B"] and "above PGD (10%)" in bad["All attacks / A"]


def test_the_studys_claims_need_every_table_its_profile_produces(p):
    study = MATStudy(p)
    study.results = _tables(p)
    assert (study.claims_table()["verdict"] == report.HOLDS).all()
    del study.results["table8"]
    with pytest.raises(MissingResult, match="cite table8"):
        study.claims_table()
    # a profile without MAT and the vanilla ensemble produces no Table 3 or transfer tables: their claims are open
    singles = MATStudy(params.load(STEM, "ci", {"n_eval": 1000, "systems": ["standard", "linf_at", "msd"]}))
    singles.results = {k: v for k, v in _tables(p).items() if k in ("table4", "table8", "figures1_4")}
    table = singles.claims_table().set_index("id")
    for cid in ("mat_submodels_robust", "mat_above_weakest_submodel", "mat_low_transfer"):
        assert table.loc[cid, "verdict"] == report.NOT_MEASURED, cid


def test_the_studys_paper_vs_run_leads_with_the_robustness_tables_and_marks_excluded_cells(p):
    study = MATStudy(p)
    study.references = {
        "table3": report.paper_vs_run(STEM, "table3", _values("table3")),
        "table4": report.paper_vs_run(STEM, "table4", _values("table4")),
    }
    table = study.paper_vs_run()
    assert list(table.index.get_level_values("artifact").unique()) == ["table4", "table3"]
    assert table.loc[("table4", "All attacks / L2 AT"), "note"].startswith("excluded: impossible")
    assert (table.loc["table3", "note"] == "").all() and "note" not in study.references["table4"]
