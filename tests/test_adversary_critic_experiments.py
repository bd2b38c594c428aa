"""The Adversary Critic study: C&W's confidence margin, the study kit, the study's tables on the ci profile and a
paper-profile dry run on MNIST-shaped fake data."""

from __future__ import annotations

import copy
import dataclasses
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from advlib import params
from advlib.cache import Cache
from advlib.experiments.adversary_critic import DEFENSE_LABELS, CriticStudy, cw_confidence_margin
from advlib.experiments.base import MissingResult


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
    """The ci profile with one network and three defenses, in its own cache and kit folder."""
    p = params.load(
        "adversary_critic",
        "ci",
        {"networks": ["lenet5"], "defenses": ["reference", "margin", "critic"], "figure4.network": "lenet5"},
    )
    folder = tmp_path_factory.mktemp("study")
    return CriticStudy(p, "cpu", cache=Cache(folder / "cache"), kit=folder / "kit")


def test_models_are_trained_once_under_derived_keys(ci_study):
    trained = ci_study.model("lenet5", "critic", 0)
    assert ci_study.model("lenet5", "critic", 0) is trained
    assert len(trained.meta["confidence"]) == 10 and [h["epoch"] for h in trained.history] == [0, 1]
    keys = {ci_study.model(n, d, s).key for n, d, s in ci_study.models()}
    assert len(keys) == len(ci_study.models())  # every network x defense x seed is its own model
    other = copy.copy(ci_study)  # the same study with another lambda for a network it does not train
    other.p = ci_study.p.model_copy(
        update={"critic": ci_study.p.critic.model_copy(update={"weight": {"lenet5": 0.1, "mlp1200": 9.0}})}
    )
    other._models = {}
    assert other.model("lenet5", "critic", 0).key == trained.key  # only lenet5's lambda names lenet5's models


def test_table1_has_every_run_and_mean_std(ci_study):
    runs = ci_study.runs
    assert len(runs) == 3 * 2 and set(runs.defense) == {"reference", "margin", "critic"}
    assert runs["error"].between(0, 100).all()
    for name in ci_study.p.eval_attacks:
        assert runs[f"success {name}"].between(0, 100).all()
        assert (runs[f"rho {name}"].dropna() > 0).all()
    table = ci_study.table1a()
    assert list(table.index) == ["Reference", "Margin [19]", "Our"]
    ref = runs[(runs.defense == "reference")]["rho CW"]
    assert table.loc["Reference", ("rho CW", "mean")] == pytest.approx(ref.mean())
    assert table.loc["Reference", ("rho CW", "std")] == pytest.approx(ref.std())
    with pytest.raises(MissingResult, match="table1b needs network 2"):
        ci_study.table1b()  # one network in this fixture
    again = CriticStudy(ci_study.p, "cpu", cache=ci_study.cache).runs  # from the cache: the same table
    pd.testing.assert_frame_equal(runs, again)


def test_figure2_grid_has_the_originals_on_the_diagonal(ci_study):
    grid, confidence = ci_study.figure2
    x, y = ci_study.evaluation_set
    assert grid.shape == (100, 1, 28, 28) and confidence.shape == (10, 10)
    for i in range(10):
        assert int(y[(x == grid[11 * i]).flatten(1).all(1)][0]) == i
    assert ((confidence >= 0) & (confidence <= 1)).all().all()


def test_figure4_panels_and_confidences(ci_study):
    panels, table = ci_study.figure4
    assert list(panels) == list(table.index) and all(len(v) == ci_study.p.figure4.n_images for v in panels.values())
    assert table["average confidence"].between(10, 100).all()


def test_study_kit_and_table2_from_the_proxy_and_from_answers(ci_study, tmp_path, monkeypatch):
    from advlib.human import SECRET_FILE, study_secret

    folder = ci_study.kit
    items, images = ci_study.human_study
    assert len(items) == len(images) and len({i.image_id for i in items}) == len(items)
    secret = study_secret(folder)  # the secret the kit folder keeps
    assert [i.image_id for i in ci_study.study_images(secret)[0]] == [i.image_id for i in items]  # stable for reruns
    assert {i.image_id for i in ci_study.study_images(bytes(16))[0]}.isdisjoint(i.image_id for i in items)
    names = (
        {w.lower() for i in items for w in (i.defense, i.network)} | set(ci_study.p.defenses) | set(ci_study.p.networks)
    )
    assert not [(i.image_id, n) for i in items for n in names if n in i.image_id.lower()]  # ids name no model
    kit = ci_study.export_kit()
    assert len(list((folder / "images").glob("*.png"))) == len(items)
    uploaded = kit["batch"].read_text().lower() + " ".join(p.name for p in (folder / "images").iterdir())
    assert not [n for n in names if n in uploaded] and SECRET_FILE not in uploaded  # what annotators see names no model
    assert len(kit["sheets"]) == len(kit["assignments"]) == math.ceil(len(items) / 25)
    table = ci_study.table2_of(items, images)
    assert "proxy" in ci_study.annotator and table["images"].sum() == len(items)
    assert table[["target_percent", "original_percent"]].stack().between(0, 100).all()
    assert table[["nn_target_percent", "nn_original_percent"]].stack().between(0, 100).all()  # beside the proxy
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
    human = answered.table2_of(items, images)
    assert "human" in answered.annotator and (human["target_percent"] == 100).all()
    with pytest.raises(ValueError, match="kit folder"):
        CriticStudy(ci_study.p, "cpu", cache=ci_study.cache).export_kit()


def test_proxy_learns_from_held_out_images_with_other_architectures(ci_study):
    from advlib.data import load_dataset, stratified_order, to_tensors
    from advlib.experiments.adversary_critic import architecture, held_out_indices

    studied = to_tensors(ci_study.train_set)[0].flatten(1)
    held_out = to_tensors(ci_study.held_out_set)[0].flatten(1)
    assert len(held_out) == ci_study.p.study.proxy_n_train == 300
    assert not {bytes(row.numpy()) for row in studied} & {bytes(row.numpy()) for row in held_out}  # no shared image
    labels = to_tensors(load_dataset("mnist5k", "train"))[1].numpy()
    order = stratified_order(labels, 0)
    assert held_out_indices(labels, 300, 0).tolist() == order[300:].tolist()  # the complement of load_dataset(n=300)
    members = ci_study.proxy_annotator().members
    assert {architecture(m) for m in members}.isdisjoint(
        architecture(ci_study.model(n, "reference", 0).model) for n in ci_study.p.networks
    )
    clone = ci_study.p.study.model_copy(
        update={
            "proxy": [
                ci_study.p.study.proxy[0].model_copy(update={"model": "lenet5", "model_options": {"num_classes": 10}})
            ]
        }
    )
    same = CriticStudy(ci_study.p.model_copy(update={"study": clone}), "cpu", cache=ci_study.cache)
    with pytest.raises(ValueError, match="studied network's architecture"):
        same.proxy_annotator()
    with pytest.raises(params.ParamsError, match="study.proxy repeats"):
        params.load("adversary_critic", "ci", {"study.proxy": [{"model": "lenet5", "epochs": 1}]})


def test_nearest_neighbour_labels_a_training_image_with_its_own_label(ci_study):
    from advlib.data import to_tensors

    x, y = to_tensors(ci_study.held_out_set)
    annotator = ci_study.nearest_neighbour_annotator()
    assert torch.equal(annotator(x[:64]).argmax(1), y[:64])
    shifted = x[:64] + 0.01  # a small move keeps the nearest reference
    assert torch.equal(annotator(shifted).argmax(1), y[:64])


def test_published_artifacts_paper_vs_run_and_claims(ci_study, tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLIB_FIGURES", str(tmp_path))
    out = SimpleNamespace(stem="adversary_critic", profile="ci")
    study = CriticStudy(ci_study.p, "cpu", cache=ci_study.cache, kit=ci_study.kit)  # nothing published yet
    with pytest.raises(MissingResult, match="table1_runs, table1a, table2"):
        study.publish("claims", out)
    for name in ("table1_runs", "table1a", "figure4", "table2"):
        study.publish(name, out)
    assert (tmp_path / "adversary_critic" / "ci" / "table2.csv").is_file()
    paper_vs_run = study.publish("paper_vs_run", out)
    # the paper's order, Table 2's rows of the profile's (only) network paired with Table 2a
    assert list(paper_vs_run.index.get_level_values(0).unique()) == ["table1a", "table2a", "figure4"]
    table2a = paper_vs_run.loc["table2a"]
    columns = ("target_percent", "original_percent")
    assert list(table2a.index) == [f"{d} / {c}" for d in DEFENSE_LABELS.values() for c in columns]
    assert table2a["run"].isna().tolist() == [
        d in ("AT [7]", "VAT [16]") for d in DEFENSE_LABELS.values() for c in columns
    ]
    assert paper_vs_run.loc[("table1a", "Our / error"), "run"] == pytest.approx(
        study.runs.query("defense == 'critic'")["error"].mean()
    )
    assert paper_vs_run.loc[("table1a", "Reference / error"), "note"].startswith("doubtful")
    claims = study.publish("claims", out).set_index("id")
    table1_claims = ["critic_largest_rho", "critic_beats_at", "small_error_cost"]
    assert (claims.loc[table1_claims, "cites"] == "table1a, table1_runs").all()  # one network: no Table 1b to cite
    assert (claims.loc[table1_claims, "verdict"] == "not measured at this profile").all()
    assert claims.loc["critic_largest_rho", "reason"].startswith("missing result 'this profile has no table1b")
    assert claims.loc["critic_beats_at", "reason"].startswith("missing result 'this profile has no table1b")
    assert claims.loc["critic_changes_label", "verdict"] in {"holds", "fails", "undecided"}
    missed = claims[claims.verdict.isin(["fails", "undecided"]) & claims.cites.eq("table2")]
    assert missed.reason.str.endswith("cannot establish a claim about human perception").all()
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
    runs = study.runs
    assert len(runs) == 2 * 5 * 2
    assert list(study.table1b().index) == ["Reference", "AT [7]", "VAT [16]", "Margin [19]", "Our"]
    assert study.figure2[0].shape == (100, 1, 28, 28)
    assert len(study.figure4[1]) == 3
