"""The Adversary Critic study: C&W's confidence margin, the study kit, the study's tables on the ci profile and a
paper-profile dry run on MNIST-shaped fake data."""

from __future__ import annotations

import copy
import dataclasses
import math

import pandas as pd
import pytest
import torch

from advlib import params
from advlib.cache import Cache
from advlib.experiments.adversary_critic import CriticStudy, cw_confidence_margin


def test_cw_margin_gives_exactly_the_confidence_at_the_worst_case():
    for confidence in (0.5, 0.95, 0.99):
        kappa = cw_confidence_margin(confidence, 10)
        logits = torch.zeros(10)
        logits[3] = kappa  # every other class exactly kappa below: the lowest confidence the margin allows
        assert float(torch.softmax(logits, 0)[3]) == pytest.approx(confidence)
    assert cw_confidence_margin(0.1, 10) == pytest.approx(0.0)  # 1/K confidence needs no margin
    with pytest.raises(ValueError, match="confidence=1.5"):
        cw_confidence_margin(1.5, 10)


def test_targeted_cw_with_the_margin_reaches_95_percent(mnist_model, mnist_test):
    from advlib.attacks import create_attack
    from advlib.params import AttackSpec

    x, y = mnist_test[0][:6], mnist_test[1][:6]
    target = (y + 1) % 10
    spec = AttackSpec(
        name="cw_l2",
        steps=100,
        targeted=True,
        options={
            "binary_search_steps": 5,
            "initial_const": 1.0,
            "stepsize": 0.1,
            "confidence": cw_confidence_margin(0.95, 10),
        },
    )
    result = create_attack(spec)(mnist_model, x, y, target)
    with torch.no_grad():
        probs = torch.softmax(mnist_model(result.x_adv), 1)
    reached = probs.argmax(1) == target
    assert reached.sum() >= 5
    assert bool((probs[reached, target[reached]] >= 0.95 - 1e-4).all())
    assert float(result.x_adv.min()) >= 0 and float(result.x_adv.max()) <= 1


@pytest.fixture(scope="module")
def ci_study(tmp_path_factory):
    """The ci profile with one network and three defenses, in its own cache."""
    p = params.load(
        "adversary_critic",
        "ci",
        {"networks": ["lenet5"], "defenses": ["reference", "margin", "critic"], "figure4.network": "lenet5"},
    )
    return CriticStudy(p, "cpu", cache=Cache(tmp_path_factory.mktemp("cache")))


def test_table1_has_every_run_and_mean_std(ci_study):
    runs = ci_study.table1_runs()
    assert len(runs) == 3 * 2 and set(runs.defense) == {"reference", "margin", "critic"}
    assert runs["error"].between(0, 100).all()
    for name in ci_study.p.eval_attacks:
        assert runs[f"success {name}"].between(0, 100).all()
        assert (runs[f"rho {name}"].dropna() > 0).all()
    table = ci_study.table1(runs, "lenet5")
    assert list(table.index) == ["Reference", "Margin [19]", "Our"]
    ref = runs[(runs.defense == "reference")]["rho CW"]
    assert table.loc["Reference", ("rho CW", "mean")] == pytest.approx(ref.mean())
    assert table.loc["Reference", ("rho CW", "std")] == pytest.approx(ref.std())
    again = CriticStudy(ci_study.p, "cpu", cache=ci_study.cache).table1_runs()  # from the cache: the same table
    pd.testing.assert_frame_equal(runs, again)


def test_figure2_grid_has_the_originals_on_the_diagonal(ci_study):
    grid, confidence = ci_study.figure2()
    assert grid.shape == (100, 1, 28, 28) and confidence.shape == (10, 10)
    for i in range(10):
        assert int(ci_study.y[(ci_study.x == grid[11 * i]).flatten(1).all(1)][0]) == i
    assert ((confidence >= 0) & (confidence <= 1)).all().all()


def test_figure4_panels_and_confidences(ci_study):
    panels, table = ci_study.figure4()
    assert list(panels) == list(table.index) and all(len(v) == ci_study.p.figure4.n_images for v in panels.values())
    assert table["average confidence"].between(10, 100).all()


def test_study_kit_and_table2_from_the_proxy_and_from_answers(ci_study, tmp_path, monkeypatch):
    from advlib.human import SECRET_FILE, study_secret

    secret = study_secret(tmp_path / "kit")
    items, images = ci_study.study_images(secret)
    assert len(items) == len(images) and len({i.image_id for i in items}) == len(items)
    assert [i.image_id for i in ci_study.study_images(secret)[0]] == [i.image_id for i in items]  # stable for reruns
    assert {i.image_id for i in ci_study.study_images(bytes(16))[0]}.isdisjoint(i.image_id for i in items)
    names = (
        {w.lower() for i in items for w in (i.defense, i.network)} | set(ci_study.p.defenses) | set(ci_study.p.networks)
    )
    assert not [(i.image_id, n) for i in items for n in names if n in i.image_id.lower()]  # ids name no model
    kit = ci_study.export_kit(items, images, tmp_path / "kit")
    assert len(list((tmp_path / "kit" / "images").glob("*.png"))) == len(items)
    uploaded = kit["batch"].read_text().lower() + " ".join(p.name for p in (tmp_path / "kit" / "images").iterdir())
    assert not [n for n in names if n in uploaded] and SECRET_FILE not in uploaded  # what annotators see names no model
    assert len(kit["sheets"]) == len(kit["assignments"]) == math.ceil(len(items) / 25)
    table, who = ci_study.table2(items, images)
    assert "proxy" in who and table["images"].sum() == len(items)
    assert table[["target_percent", "original_percent"]].stack().between(0, 100).all()
    # the same table from an MTurk-style results file in which every worker answers the adversarial target
    batch = pd.read_csv(kit["batch"], dtype=str).fillna("")
    key = {i.image_id: i.target for i in items}
    results = batch.rename(columns=lambda c: "Input." + c)
    for k in range(1, 26):
        if f"Input.image_{k}_id" in results:
            results[f"Answer.label_{k}"] = [key.get(i, "") for i in results[f"Input.image_{k}_id"]]
    results["WorkerId"] = [f"W{n}" for n in range(len(results))]
    monkeypatch.setenv("ADVLIB_DATA", str(tmp_path))  # study.results must lie inside the project, data or cache root
    results.to_csv(tmp_path / "results.csv", index=False)
    answered = copy.copy(ci_study)  # a shallow copy with the results file set
    answered.p = ci_study.p.model_copy(
        update={"study": ci_study.p.study.model_copy(update={"results": str(tmp_path / "results.csv")})}
    )
    human, who = answered.table2(items, images)
    assert "human" in who and (human["target_percent"] == 100).all()


def test_claims_are_evaluated_on_the_run(ci_study):
    from advlib.human import study_secret
    from advlib.report import evaluate_claims

    items, images = ci_study.study_images(study_secret(ci_study.cache.root / "kit"))
    table2, who = ci_study.table2(items, images)
    tables = ci_study.tables(ci_study.table1_runs(), table2)
    assert set(tables) == {"table1_runs", "table1a", "table2"}  # one network in this fixture: no Table 1b
    claims = evaluate_claims(ci_study.claims(who), tables).set_index("id")
    table1_claims = ["critic_largest_rho", "critic_beats_at", "small_error_cost"]
    assert (claims.loc[table1_claims, "verdict"] == "not measured at this profile").all()
    assert claims.loc["critic_largest_rho", "reason"].startswith("this profile has no table1b")
    assert claims.loc["critic_beats_at", "reason"].startswith("this profile has no table1b")
    assert claims.loc["critic_changes_label", "verdict"] in {"holds", "does not hold"}
    assert ((claims.verdict == "holds") | (claims.reason.str.len() > 0)).all()


def test_bad_parameters_are_refused():
    with pytest.raises(params.ParamsError, match="critic.weight|lambda"):
        params.load("adversary_critic", "ci", {"critic.weight": {"lenet5": 0.1}})
    with pytest.raises(params.ParamsError, match="figure2"):
        params.load("adversary_critic", "ci", {"defenses": ["reference"]})
    with pytest.raises(params.ParamsError, match="nonexistent"):
        params.load("adversary_critic", "ci", {"networks": ["nonexistent"]})


def test_paper_profile_dry_run_on_mnist_shaped_fake_data(tmp_path, monkeypatch):
    """The paper profile's code path (MNIST loader, 100-epoch settings shrunk, every defense, both networks, 2 runs)
    with torchvision MNIST replaced by fake data of the same shape (no download here)."""
    from advlib import data

    monkeypatch.setitem(
        data._LOADERS, "mnist", lambda request: data._load_fake(dataclasses.replace(request, shape=(1, 28, 28)))
    )
    overrides = {
        "device": "cpu",
        "data.n_train": 20,
        "data.n_test": 30,
        "train.epochs": 1,
        "critic.epochs": 1,
        "seeds": [0, 1],
        "n_eval": 4,
        "eval_attacks.DeepFool.steps": 2,
        "eval_attacks.CW.steps": 2,
        "eval_attacks.CW.options.binary_search_steps": 1,
        "eval_attacks.Our.steps": 2,
        "figure2.attack.steps": 2,
        "figure2.attack.options.binary_search_steps": 1,
        "figure4.attack.steps": 2,
        "figure4.attack.options.binary_search_steps": 1,
        "figure4.n_images": 3,
        "study.n_images": 10,
        "study.attack.steps": 3,
        "study.proxy": [
            {
                "model": "lenet5_classic",
                "epochs": 1,
                "batch_size": 10,
                "adversary": {"name": "pgd_l2", "eps": 2.0, "steps": 1},
                "adv_weight": 0.5,
            }
        ],
    }
    p = params.load("adversary_critic", "paper", overrides)
    assert p.data.name == "mnist" and len(p.defenses) == 5 and p.critic.weight == {"mlp1200": 0.5, "lenet5": 0.1}
    study = CriticStudy(p, "cpu", cache=Cache(tmp_path))
    runs = study.table1_runs()
    assert len(runs) == 2 * 5 * 2
    assert list(study.table1(runs, "lenet5").index) == ["Reference", "AT [7]", "VAT [16]", "Margin [19]", "Our"]
    assert study.figure2()[0].shape == (100, 1, 28, 28)
    assert len(study.figure4()[1]) == 3
