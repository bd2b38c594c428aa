"""The mixture-of-generators experiment plan: disjoint halves, unsupervised pools, cached systems, statistics."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from advlib import claims as C
from advlib import params
from advlib.cache import Cache
from advlib.experiments import mixture_of_generators as mog
from advlib.experiments.mixture_of_generators import MixtureStudy, mean_and_errors

OVERRIDES = {
    "n_canonical": 48,
    "n_transformed": 48,
    "n_test": 32,
    "n_success": 16,
    "attack_sets": {1: ["FGSM"], 2: ["FGSM", "AUN"]},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    p = params.load("mixture_of_generators", "ci", OVERRIDES)
    return MixtureStudy(p, "cpu", cache=Cache(tmp_path_factory.mktemp("cache")))


def test_halves_are_disjoint(study):
    canonical = study.halves.canonical.flatten(1)
    transformed = study.halves.transformed.flatten(1)
    assert len(canonical) == 48 and len(transformed) == 48
    assert not (torch.cdist(canonical, transformed) < 1e-6).any()


def test_pool_holds_one_attack_per_image(study):
    pool = study.transformed_pool(["FGSM", "AUN"], seed=3)
    fgsm, aun = study.adversarials("FGSM", "transformed"), study.adversarials("AUN", "transformed")
    from_fgsm = (pool == fgsm).flatten(1).all(dim=1)
    from_aun = (pool == aun).flatten(1).all(dim=1)
    assert torch.all(from_fgsm ^ from_aun) and from_fgsm.any() and from_aun.any()
    assert torch.equal(pool, study.transformed_pool(["FGSM", "AUN"], seed=3))


def test_systems_are_cached_and_composed(study, caplog):
    trained = study.system("joint", ["FGSM", "AUN"], seed=0)
    joint = trained.model
    assert joint.num_generators == 2 and len(trained.history) == study.p.mixture.train_epochs
    assert len(trained.meta["identity_mse"]) == study.p.mixture.identity_epochs
    with caplog.at_level(logging.INFO, logger="advlib"):
        again = study.system("joint", ["FGSM", "AUN"], seed=0).model
    assert "loaded joint mixture" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(joint.state_dict().values(), again.state_dict().values()))
    separately = study.separately_trained(["FGSM", "AUN"], seed=0)
    single_aun = study.system("single", ["AUN"], seed=0).model.generators[0]
    assert all(
        torch.equal(a, b)
        for a, b in zip(separately.generators[1].state_dict().values(), single_aun.state_dict().values())
    )
    assert separately.discriminator is joint.discriminator or all(
        torch.equal(a, b)
        for a, b in zip(separately.discriminator.state_dict().values(), joint.discriminator.state_dict().values())
    )
    evaluation = study.evaluate(joint, ["FGSM", "AUN"])
    assert len(evaluation.y) == 2 * 32 and set(evaluation.attack_names) == {"FGSM", "AUN"}
    built = study.evaluation("joint", ["FGSM", "AUN"], seed=0)
    with caplog.at_level(logging.INFO, logger="advlib"):
        loaded = study.evaluation("joint", ["FGSM", "AUN"], seed=0)
    assert "loaded evaluation of joint" in caplog.text
    for result in (built, loaded):  # the cached evaluation is the live one, field by field
        assert result.attack_names == evaluation.attack_names and result.num_generators == evaluation.num_generators
        assert result.num_classes == evaluation.num_classes
        for field in ("y", "attack", "winner", "correct", "correct_undefended"):
            assert (getattr(result, field) == getattr(evaluation, field)).all(), field


def test_keys_are_derived_from_what_determines_a_system(study):
    """A system's key follows its kind, pool order, seed and training parameters; an evaluation's follows the keys of
    the systems it uses (for 'separately': the single-attack ones and the joint one)."""
    key = study.system_key("joint", ["FGSM", "AUN"], 0)
    assert key.kind == "mixgen" and key.params["classifier"] == study.trained.key
    others = {
        study.system_key("faster", ["FGSM", "AUN"], 0).key,
        study.system_key("joint", ["AUN", "FGSM"], 0).key,  # the pool assigns attacks by position
        study.system_key("joint", ["FGSM", "AUN"], 1).key,
    }
    longer = params.load("mixture_of_generators", "ci", {**OVERRIDES, "mixture": {"train_epochs": 2}})
    others.add(MixtureStudy(longer, "cpu", cache=study.cache).system_key("joint", ["FGSM", "AUN"], 0).key)
    assert key.key not in others and len(others) == 4


def test_study_declares_the_papers_artifacts():
    declared = MixtureStudy.artifacts
    for name in ("table1", "table2", "figures5-6", "table3", "section45", "generator_roles", "table6", "budget"):
        assert declared[name].caption, name
    paired = {name for name, spec in declared.items() if spec.pair is not None}
    assert paired == {"table1", "table2", "table3", "section45", "table6", "budget"}
    assert declared["budget"].floatfmt == 0


def test_published_tables_feed_paper_vs_run_and_the_claims(study, tmp_path, monkeypatch):
    """The budget is paired with the paper's budget (so paper_vs_run repeats it, as the paper-vs-run summary always
    did); the claims name the tables this run has not produced instead of evaluating without them."""
    from types import SimpleNamespace

    from advlib.experiments.base import MissingResult

    monkeypatch.setenv("ADVLIB_FIGURES", str(tmp_path))
    out = SimpleNamespace(stem="mixture_of_generators", profile="ci")
    budget = study.publish("budget", out)
    assert (tmp_path / "mixture_of_generators" / "ci" / "budget.csv").is_file()
    summary = study.publish("paper_vs_run", out)
    pd.testing.assert_frame_equal(summary.loc["budget"], budget, check_names=False)
    with pytest.raises(MissingResult, match="table2"):
        study.publish("claims", out)


def test_bad_system_requests(study):
    with pytest.raises(ValueError, match="kind 'mixed'"):
        study.system("mixed", ["FGSM"])
    with pytest.raises(ValueError, match="exactly one attack"):
        study.system("single", ["FGSM", "AUN"])


def test_attack_sets_must_name_known_attacks():
    with pytest.raises(params.ParamsError, match="unknown attacks"):
        params.load("mixture_of_generators", "ci", {"attack_sets": {1: ["NOPE"]}})
    with pytest.raises(params.ParamsError, match="must list 2 attacks"):
        params.load("mixture_of_generators", "ci", {"attack_sets": {2: ["FGSM"]}})


def test_mean_and_errors():
    stats = mean_and_errors([1.0, 2.0, 3.0, 6.0])
    assert stats["mean"] == pytest.approx(3.0)
    assert stats["std"] == pytest.approx(2.1602469, rel=1e-6)
    assert stats["se"] == pytest.approx(2.1602469 / 2, rel=1e-6)
    assert mean_and_errors([4.0])["se"] != mean_and_errors([4.0])["se"]  # NaN spread for one run


def test_table6_reference_rows():
    from advlib.experiments.mixture_of_generators import table6_reference_rows

    table6 = pd.DataFrame(
        [
            {"kind": "joint", "experiment": "1", "3": 70.0},
            {"kind": "faster", "experiment": "mean", "3": 60.0},
            {"kind": "faster", "experiment": "std", "3": 5.0},
        ]
    )
    rows = table6_reference_rows(table6)
    assert rows.loc["jointly_experiment1", "3"] == 70.0 and rows.loc["faster_pm", "3"] == 5.0
    assert rows.loc["jointly_experiment2"].isna().all()  # a run with one joint repeat


# -- claims on hand-made tables ----------------------------------------------------------------------------------
PAPER_TABLE2 = {
    "FGSM": 97.5,
    "PGD": 93.5,
    "DF": 98.9,
    "AUN": 18.9,
    "BIM": 97.5,
    "AGN": 11.4,
    "RAGN": 92.9,
    "SAPN": 98.1,
    "SLIDE": 95.3,
}
BUDGET_PAPER = {
    "n_canonical": 30000,
    "n_transformed": 30000,
    "n_test": 10000,
    "classifier_epochs": 100,
    "identity_epochs": 10,
    "train_epochs": 100,
    "joint_repeats": 2,
    "faster_repeats": 10,
}
# Table 6 of the paper: the two joint runs and the ten faster-initialisation runs per attack-set size (std 8.0, 2.3, 2.1)
PAPER_JOINT_RUNS = {"3": [74.1, 82.7], "5": [61.1, 69.8], "9": [65.1, 57.7]}
PAPER_FASTER_RUNS = {
    "3": [83.6, 74.7, 81.6, 60.6, 81.8, 82.6, 72.0, 67.0, 67.4, 70.3],
    "5": [63.6, 68.0, 66.3, 66.4, 69.0, 69.0, 71.2, 65.7, 67.1, 70.2],
    "9": [65.1, 66.4, 60.9, 66.3, 60.9, 63.3, 62.0, 63.5, 61.6, 61.8],
}
G, S, M, IDLE = "generalist", "specialist", "marginalist", "idle"


def _budget(**run) -> pd.DataFrame:
    values = {**BUDGET_PAPER, **run}
    return pd.DataFrame({"paper": BUDGET_PAPER, "run": values}).assign(difference=lambda b: b["run"] - b["paper"])


def _roles(per_size: dict[int, list[list[str]]]) -> pd.DataFrame:
    """generator_roles of one joint system and further faster ones per size, each a list of roles (idle: no win)."""
    frames = {}
    for size, systems in per_size.items():
        for index, roles in enumerate(systems):
            wins = [0 if r == IDLE else 100 for r in roles]
            name = (
                f"expertise_joint_{size}attacks_seed0" if index == 0 else f"expertise_faster_{size}attacks_seed{index}"
            )
            frames[name] = pd.DataFrame(
                {
                    "wins": wins,
                    "win_share": [w / max(sum(wins), 1) for w in wins],
                    "accuracy": 50.0,
                    "attacks_covered": 1,
                    "role": pd.Categorical(roles, categories=[G, S, M, IDLE]),
                },
                index=pd.RangeIndex(len(roles), name="generator"),
            )
    return pd.concat(frames, names=["system", "generator"])


def _table6(faster: dict[str, list[float]], joint: dict[str, list[float]] | None = None) -> pd.DataFrame:
    """Table 6 as MixtureStudy.table6 writes it: per kind (joint, then faster) one row per run, then mean, std and se.
    `joint` defaults to the paper's two joint runs."""
    rows = []
    for kind, runs in (("joint", PAPER_JOINT_RUNS if joint is None else joint), ("faster", faster)):
        rows += [
            {"kind": kind, "experiment": str(r + 1), **{s: v[r] for s, v in runs.items()}}
            for r in range(len(next(iter(runs.values()))))
        ]
        for stat in ("mean", "std", "se"):
            rows.append(
                {"kind": kind, "experiment": stat, **{s: mog.mean_and_errors(v)[stat] for s, v in runs.items()}}
            )
    return pd.DataFrame(rows)


def _paper_tables(**changes) -> dict[str, pd.DataFrame]:
    """The paper's own numbers (Tables 2, 3, 6, Section 4.5) at its budget, and generator roles like its Figures 7-30
    over four systems per size: every claim should hold on them."""
    table3 = pd.DataFrame(
        {"3": [94.9, 84.4, 81.2, 0.0], "5": [73.9, 64.2, 69.3, 0.0], "9": [73.9, 63.3, 62.5, 0.0]},
        index=pd.Index(["separately", "joint", "faster", "undefended"], name="system"),
    )
    tables = {
        "table2": pd.DataFrame(
            {"attack": list(PAPER_TABLE2), "defended": list(PAPER_TABLE2.values()), "undefended": 0.0}
        ),
        "table3": table3,
        "section45": pd.DataFrame(
            [
                {"system": "large_generator", "attacks": 9, "generator_weights": 333697, "accuracy": 66.7},
                {"system": "mixture_jointly", "attacks": 9, "generator_weights": 257481, "accuracy": 63.3},
            ]
        ),
        "generator_roles": _roles({3: [[G, G, G]] * 4, 9: [[G] * 6 + [S] * 2 + [M]] * 4}),
        "table6": _table6(PAPER_FASTER_RUNS),
        "budget": _budget(),
    }
    tables.update(changes)
    return tables


def _evaluate(tables) -> pd.DataFrame:
    table = C.evaluate_claims(mog.claims(), tables).set_index("id")
    misses = table[table["verdict"] != C.HOLDS]
    assert misses["reason"].str.strip().astype(bool).all()
    return table


# On the paper's own numbers, over its runs (2 joint, 10 faster, 1 of everything else), four claims are undecided:
# the spread of its Table 6 runs (8.0 points at 3 attacks) is wider than the gaps they rest on.
UNDECIDED_ON_THE_PAPERS_RUNS = {"separate_beats_joint", "faster_about_joint", "drop_flattens", "large_about_mixture"}


def test_the_papers_numbers_hold_or_are_undecided_over_its_runs():
    table = _evaluate(_paper_tables())
    undecided = set(table.index[table["verdict"] == C.UNDECIDED])
    assert undecided == UNDECIDED_ON_THE_PAPERS_RUNS, table[["verdict", "reason"]]
    assert set(table["verdict"].drop(sorted(undecided))) == {C.HOLDS}
    # the 9-attack joint system over its 2 runs (65.1, 57.7): the spread pooled with the 10 faster runs (10 dof)
    joint9, faster9 = np.array(PAPER_JOINT_RUNS["9"]), np.array(PAPER_FASTER_RUNS["9"])
    pooled = (((joint9 - joint9.mean()) ** 2).sum() + ((faster9 - faster9.mean()) ** 2).sum()) / 10
    k = round(joint9.mean() * 900)  # the images' part: 90000 adversarials (9 x n_test), shared by both runs
    images = 1e4 * (k + 1) / 90002 * (1 - (k + 1) / 90002) / 90002
    variance = pooled / 2 + images
    half = stats.t.ppf(0.975, variance**2 / ((pooled / 2) ** 2 / 10)) * math.sqrt(variance)
    row = table.loc["above_chance"]
    assert (row["margin"], row["margin_low"]) == pytest.approx((joint9.mean() - 10, joint9.mean() - 10 - half))
    assert row["evidence"].startswith("3 of 3 comparisons hold; closest: joint, 9 attacks 61.4% vs 10%: +51.4")
    assert "points on 2 runs (one-sample t over runs, pooled spread" in row["evidence"]
    assert "drop 3->5 13.0% vs drop 5->9 4.1%: +8.9" in table.loc["drop_flattens", "evidence"]
    reason = table.loc["large_about_mixture", "reason"]
    assert "runs: joint 2, faster 10, separately and large generator 1 each" in reason and "(10 dof)" in reason
    assert "on 36 generators (paired Agresti-Min" in table.loc["generalists_most_common", "evidence"]
    assert table.loc["spread_shrinks", "evidence"].startswith(
        "2 of 2 comparisons hold; closest: std 3 attacks 7.99 vs 5 attacks 2.28: variance ratio 12.3 [3.05, 49.5] on 10 runs"
    )


def _table2(**accuracy) -> pd.DataFrame:
    values = {**PAPER_TABLE2, **accuracy}
    return pd.DataFrame({"attack": list(values), "defended": list(values.values()), "undefended": 0.0})


def _joint_runs(**runs: list[float]) -> pd.DataFrame:
    """Table 6 with the paper's faster runs and its joint runs, some attack sets' joint runs replaced."""
    return _table6(PAPER_FASTER_RUNS, {**PAPER_JOINT_RUNS, **runs})


def _table3(**rows) -> pd.DataFrame:
    table3 = _paper_tables()["table3"].copy()
    for row, values in rows.items():
        table3.loc[row] = values
    return table3


@pytest.mark.parametrize(
    "claim, changes, says",
    [
        ("hardest_attacks", {"table2": _table2(FGSM=5.0)}, "FGSM 5.0% vs AUN 18.9%: -13.9 [-14.8, -13.0] points"),
        (
            "single_attack_high",
            {"table2": _table2(**{a: min(v, 60.0) for a, v in PAPER_TABLE2.items()})},
            "9 of 9 comparisons fail",
        ),
        ("above_chance", {"table6": _joint_runs(**{"9": [4.0, 3.0]})}, "joint, 9 attacks 3.5% vs 10%: -6.5"),
        (
            "separate_beats_joint",
            {"table3": _table3(separately=[94.9, 50.0, 73.9])},
            "separately, 5 attacks 50.0% vs joint, 5 attacks 65.5%: -15.5",
        ),
        (
            "faster_about_joint",
            {"table6": _table6({**PAPER_FASTER_RUNS, "3": [v - 30 for v in PAPER_FASTER_RUNS["3"]]})},
            "faster, 3 attacks 44.2% vs joint, 3 attacks 78.4%: -34.2",
        ),
        (
            "more_attacks_harder",
            {"table6": _joint_runs(**{"3": [40.0, 42.0], "5": [70.0, 72.0]})},
            "joint, 3 attacks 41.0% vs joint, 5 attacks 71.0%: -30.0",
        ),
        (
            "drop_flattens",
            {"table6": _joint_runs(**{"3": [80.0, 80.0], "5": [78.0, 78.0], "9": [40.0, 40.0]})},
            "drop 3->5 2.0% vs drop 5->9 38.0%: -36.0",
        ),
        (
            "large_about_mixture",
            {"section45": _paper_tables()["section45"].assign(accuracy=[30.0, 63.3])},
            "large generator 30.0% vs mixture 61.4%: -31.4",
        ),
        (
            "generalists_most_common",
            {"generator_roles": _roles({3: [[G, G, G]] * 4, 9: [[G] * 2 + [M] * 7] * 4})},
            "generalists (9 attacks) 22.2% vs marginalists 77.8%: -55.6",
        ),
        (
            "specialisation_grows",
            {"generator_roles": _roles({3: [[G, S, M]] * 4, 9: [[G] * 6 + [S] * 3] * 4})},
            "non-generalists, 9 attacks 33.3% vs 3 attacks 66.7%: -33.3",
        ),
        (
            "spread_shrinks",
            {
                "table6": _table6(
                    {"3": PAPER_FASTER_RUNS["5"], "5": PAPER_FASTER_RUNS["3"], "9": PAPER_FASTER_RUNS["9"]}
                )
            },
            "std 3 attacks 2.28 vs 5 attacks 7.99: variance ratio 0.0814 [0.0202, 0.328] on 10 runs",
        ),
    ],
)
def test_each_claim_can_fail_and_says_why(claim, changes, says):
    table = _evaluate(_paper_tables(**changes))
    assert table.loc[claim, "verdict"] == C.FAILS
    assert "the 95% interval excludes the claim" in table.loc[claim, "reason"]
    assert says in table.loc[claim, "reason"], table.loc[claim, "reason"]


def test_budget_and_roles_give_the_cause_of_a_miss():
    table = _evaluate(_paper_tables(table2=_table2(FGSM=5.0)))
    reason = table.loc["hardest_attacks", "reason"]
    assert "lowest two: FGSM 5.0%, AGN 11.4%" in reason and "100 (paper 100) training" in reason
    roles = _roles({3: [[G, S, M]] * 4, 9: [[G] * 6 + [S] * 3] * 4})
    reason = _evaluate(_paper_tables(generator_roles=roles)).loc["specialisation_grows", "reason"]
    assert "3 attacks: 4 generalists, 4 specialists, 4 marginalists (0 idle)" in reason


def test_small_samples_leave_claims_undecided_with_the_sample_that_would_decide_them():
    """On 20 test images and 3 faster runs the paper's own gaps (except the huge ones) straddle their boundaries."""
    small = _paper_tables(
        budget=_budget(n_test=20, faster_repeats=3, train_epochs=5, identity_epochs=2),
        table6=_table6({s: v[:3] for s, v in PAPER_FASTER_RUNS.items()}),
    )
    table = _evaluate(small)
    for claim in ("faster_about_joint", "large_about_mixture", "drop_flattens", "spread_shrinks"):
        assert table.loc[claim, "verdict"] == C.UNDECIDED, claim
        assert "straddles the claim's boundary" in table.loc[claim, "reason"], claim
    assert table.loc["hardest_attacks", "verdict"] == C.HOLDS  # huge gaps decide even on 20 images
    large = table.loc["large_about_mixture"]
    assert "large generator 66.7% vs mixture 61.4%: +5.3" in large["reason"] and "on 2 runs" in large["reason"]
    assert "more runs alone would not decide it" in large["reason"] and "5 (paper 100) training" in large["reason"]
    assert large["margin_low"] < 0 < large["margin"]
    assert "runs would decide it" in table.loc["spread_shrinks", "reason"]
    assert "std of 3 faster-initialisation runs" in table.loc["spread_shrinks", "reason"]


def test_role_shares_need_many_generators():
    """One 9-generator system with the paper's Figure 4 mix (5 generalists, 2 specialists, 2 marginalists) does not
    decide 'most common': 9 generators are too few for a 33-point lead."""
    roles = _roles({3: [[G, G, G]], 9: [[G] * 5 + [S] * 2 + [M] * 2]})
    row = _evaluate(_paper_tables(generator_roles=roles)).loc["generalists_most_common"]
    assert row["verdict"] == C.UNDECIDED and row["n"] == 9
    assert "generalists (9 attacks) 55.6% vs specialists 22.2%: +33.3" in row["reason"]
    assert "generators would decide it" in row["reason"]


def test_a_tie_of_shares_decides_nothing():
    """Only one generator won in each system: both non-generalist shares are 0, a tie no sample size resolves."""
    roles = _roles({3: [[G, IDLE, IDLE]], 9: [[G] + [IDLE] * 8]})
    row = _evaluate(_paper_tables(generator_roles=roles)).loc["specialisation_grows"]
    assert row["verdict"] == C.UNDECIDED and row["margin"] == 0
    assert "the observed effect is zero" in row["reason"] and "(8 idle)" in row["reason"]


def test_idle_generators_do_not_count_against_generalists():
    """Idle generators (no win) are no role: 12 generalists beat 4 marginalists though 20 generators sat idle (counted
    as marginalists, 24 > 12, the claim would fail)."""
    roles = _roles({3: [[G, G, G]] * 4, 9: [[G] * 3 + [M] + [IDLE] * 5] * 4})
    row = _evaluate(_paper_tables(generator_roles=roles)).loc["generalists_most_common"]
    assert row["verdict"] == C.HOLDS and row["n"] == 16
    assert "generalists (9 attacks) 75.0% vs marginalists 25.0%: +50.0" in row["evidence"]


def test_most_attacks_above_90_is_a_majority():
    five_high = _table2(PGD=40.0, AUN=18.9, AGN=11.4, RAGN=40.0)  # FGSM, DF, BIM, SAPN, SLIDE stay above 90%
    assert _evaluate(_paper_tables(table2=five_high)).loc["single_attack_high", "verdict"] == C.HOLDS
    four_high = _table2(PGD=40.0, RAGN=40.0, SLIDE=40.0)
    row = _evaluate(_paper_tables(table2=four_high)).loc["single_attack_high"]
    assert row["verdict"] == C.FAILS and "5 of 9 comparisons fail" in row["reason"]


def test_claims_without_their_results_are_not_measured():
    one_run = _paper_tables(table6=_table6({s: v[:1] for s, v in PAPER_FASTER_RUNS.items()}))
    row = _evaluate(one_run).loc["spread_shrinks"]
    assert row["verdict"] == C.NOT_MEASURED and "a spread needs at least 2" in row["reason"]
    alike = _paper_tables(table6=_table6({**PAPER_FASTER_RUNS, "5": [66.0] * 10}))
    row = _evaluate(alike).loc["spread_shrinks"]
    assert row["verdict"] == C.NOT_MEASURED and "runs of the 5-attack set(s) all scored the same" in row["reason"]
    faster = _evaluate(one_run).loc["faster_about_joint"]  # measured: the 2 joint runs give the spread
    assert faster["verdict"] == C.UNDECIDED and "on 2 runs (t over runs, pooled spread" in faster["evidence"]
    no_repeat = _table6(
        {s: v[:1] for s, v in PAPER_FASTER_RUNS.items()}, {s: v[:1] for s, v in PAPER_JOINT_RUNS.items()}
    )
    row = _evaluate(_paper_tables(table6=no_repeat)).loc["above_chance"]
    assert row["verdict"] == C.NOT_MEASURED and "no run-to-run spread" in row["reason"]
    two = ["3", "5"]
    two_sets = _table6({s: PAPER_FASTER_RUNS[s] for s in two}, {s: PAPER_JOINT_RUNS[s] for s in two})
    two_sets = _evaluate(_paper_tables(table3=_paper_tables()["table3"][two], table6=two_sets))
    assert two_sets.loc["drop_flattens", "verdict"] == C.NOT_MEASURED
    assert two_sets.loc["more_attacks_harder", "verdict"] == C.HOLDS


def test_budget_reads_the_epochs_actually_run(study):
    budget = study.budget_table()
    assert budget.loc["n_test", "run"] == 32 and budget.loc["n_transformed", "run"] == 48
    assert budget.loc["train_epochs", "run"] == study.p.mixture.train_epochs == 1
    assert budget.loc["classifier_epochs", "run"] == study.p.classifier.epochs
    assert budget.loc["train_epochs", "paper"] == 100 and budget.loc["n_test", "paper"] == 10000


def test_budget_keys_are_whole_numbers_the_profile_accepts():
    default = params.load("mixture_of_generators", "default")
    for key in MixtureStudy.budget:
        value = default
        for part in key.split("."):
            value = getattr(value, part)
        assert isinstance(value, int) and value >= 1, key
        halved = params.load("mixture_of_generators", "default", {key: max(1, value // 2)})
        assert halved != default or value == 1, key
