"""The MAT study on the ci profile: counted passes equal Table 6's formulas, unions are per-sample worst cases,
transferability bookkeeping, the vanilla ensemble, diagnostics; bad parameters; a paper-profile dry run."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from advlib import params
from advlib.cache import Cache
from advlib.defenses.mat import cross_gradient_ratio, ramp_scale, sign_disagreement
from advlib.evaluate import attack_suite, union_robustness
from advlib.experiments.mimo_adversarial_training import DIAGNOSTICS_STREAM, LABELS, MATStudy, transfer_for_paper
from advlib.models import Normalize
from advlib.train import epoch_seed

SYSTEMS = ["standard", "linf_at", "l2_at", "l1_at", "vanilla", "msd", "mat"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    p = params.load("mimo_adversarial_training", "ci", {"systems": SYSTEMS, "n_eval": 12})
    return MATStudy(p, "cpu", cache=Cache(tmp_path_factory.mktemp("cache")))


def test_counted_passes_match_table6(study):
    table = study.passes_table(SYSTEMS)
    trained = table.drop(index=LABELS["vanilla"])
    assert (trained["forward"] == trained["formula forward"]).all()
    assert (trained["backward"] == trained["formula backward"]).all()
    k = study.p.iterations
    assert tuple(table.loc["MAT", ["forward", "backward"]]) == (k + 1, k + 1)
    assert tuple(table.loc["MSD", ["forward", "backward"]]) == (4 * k + 1, k + 1)


def test_unions_are_per_sample_worst_cases(study):
    table = study.robustness_table(["linf_at", "mat"])
    model, key = study.classifier("mat")
    x, y = study.evaluation_set
    suite = attack_suite(model, x, y, list(study.p.eval_attacks.values()), model_key=key, cache=study.cache)
    robust = dict(zip(study.p.eval_attacks, suite.robust().values()))
    for group, names in study.p.groups.items():
        expected = 100 * float(torch.stack([robust[a] for a in names]).all(0).float().mean())
        assert table.loc[f"All {group}", "MAT"] == pytest.approx(expected)
        assert table.loc[f"All {group}", "MAT"] <= min(table.loc[a, "MAT"] for a in names)
    assert table.loc["All attacks", "MAT"] <= table.loc[[f"All {g}" for g in study.p.groups], "MAT"].min()
    assert (table.drop(index="clean") <= table.loc["clean"] + 1e-9).all().all()


def test_attacks_beyond_n_each_run_as_each_groups_cascade(study):
    """With n_each < n_eval every attack runs alone on the first n_each images and each group as a cascade beyond
    them: the rows of the groups' later attacks equal the suite on the first n_each, clean covers all n_eval, and
    each union is the suite's union on the first n_each joined with the cascade's on the rest."""
    p = study.p.model_copy(update={"n_each": 6})
    table = MATStudy(p, "cpu", cache=study.cache).robustness_table(["mat"])["MAT"]
    model, key = study.classifier("mat")
    x, y = study.evaluation_set
    first = attack_suite(model, x[:6], y[:6], study.p.eval_attacks, model_key=key, cache=study.cache)
    robust = first.robust()
    with torch.no_grad():
        assert table["clean"] == pytest.approx(100 * float((model(x).argmax(1) == y).float().mean()))
    unions = []
    for group, names in study.p.groups.items():
        for a in names[1:]:
            assert table[a] == pytest.approx(100 * float(robust[a].float().mean()))
        rest = union_robustness(
            model,
            x[6:],
            y[6:],
            {a: study.p.eval_attacks[a] for a in names},
            batch_attacks_on_survivors=True,
            model_key=key,
            cache=study.cache,
        )
        union = torch.cat([torch.stack([robust[a] for a in names]).all(0), rest.robust])
        assert table[f"All {group}"] == pytest.approx(100 * float(union.float().mean()))
        assert table[f"All {group}"] <= table[names[0]]
        unions.append(union)
    assert table["All attacks"] == pytest.approx(100 * float(torch.stack(unions).all(0).float().mean()))
    images = MATStudy(p, "cpu", cache=study.cache).robustness_table(["mat"])["images"]
    later = {a for names in study.p.groups.values() for a in names[1:]}
    assert all(images[row] == (6 if row in later else 12) for row in images.index)
    assert "images" not in study.robustness_table(["mat"]).columns  # every row on all n_eval images


def test_n_each_must_be_at_most_n_eval_and_leave_no_attack_outside_a_group():
    with pytest.raises(ValueError, match="n_each=30 must be at most n_eval=20"):
        params.load("mimo_adversarial_training", "ci", {"n_each": 30})
    with pytest.raises(ValueError, match=r"'PGD linf', 'Salt & Pepper'\] are in no group; groups: l1"):
        params.load("mimo_adversarial_training", "ci", {"n_each": 10, "groups": {"l1": ["PGD l1"]}})


def test_transfer_tables_bookkeeping(study):
    table = study.transfer_table("mat", "l2")
    counts, ratios = table["count"], table["ratio %"]
    assert list(counts.columns) == ["Sub-model 1 (l1)", "Sub-model 2 (l2)", "Sub-model 3 (linf)", "MAT"]
    assert list(counts.index) == ["Sub-model 2 (l2)", "MAT", "No Attack"]
    assert ratios.loc["Sub-model 2 (l2)", "Sub-model 2 (l2)"] == 100 and ratios.loc["MAT", "MAT"] == 100
    model, _ = study.classifier("mat")
    x, y = study.evaluation_set
    with torch.no_grad():
        assert counts.loc["No Attack", "MAT"] == int((model(x).argmax(1) != y).sum())
    paper_keys = transfer_for_paper(table, "MAT")
    assert list(paper_keys.index) == ["source sub-model", "ensemble", "No Attack"]
    assert list(paper_keys.columns) == ["L1 sub-model", "L2 sub-model", "Linf sub-model", "ensemble"]
    assert paper_keys.loc["source sub-model", "L2 sub-model"] == counts.loc["Sub-model 2 (l2)", "Sub-model 2 (l2)"]


def test_sub_models_follow_section_4_1_order(study):
    """Sub-models 1, 2, 3 are the L1, L2, Linf ones (the paper's Section 4.1) in every profile, in MAT's training
    norms, in the vanilla ensemble, in Table 3's columns and in the Figure 1 members."""
    for profile in ("ci", "default", "paper", "paper_cifar10"):
        assert params.load("mimo_adversarial_training", profile).members == ["l1", "l2", "linf"]
    assert params.load("mimo_adversarial_training", "paper").msd_model == "small_cnn"
    assert study._recipe("mat")[3] == ["l1", "l2", "linf"]
    labels = ["Sub-model 1 (l1)", "Sub-model 2 (l2)", "Sub-model 3 (linf)"]
    assert [label for label, _, _ in study.sub_models("mat")] == labels
    vanilla = study.sub_models("vanilla")
    assert [label for label, _, _ in vanilla] == labels
    assert [key for _, _, key in vanilla] == [study.classifier(s)[1] for s in ("l1_at", "l2_at", "linf_at")]
    assert list(study.table3("mat").columns) == ["MAT", *labels]
    assert sorted(study.diagnostics("mat")["member"].unique()) == ["1 (l1)", "2 (l2)", "3 (linf)"]
    with pytest.raises(
        params.ParamsError, match=r"members=\['linf', 'linf', 'l1'\] must name each of l1, l2, linf once"
    ):
        params.load("mimo_adversarial_training", "ci", {"members": ["linf", "linf", "l1"]})


def test_vanilla_is_the_mean_of_the_three_at_models(study):
    vanilla, _ = study.classifier("vanilla")
    parts = [study.classifier(n)[0] for n in ("linf_at", "l2_at", "l1_at")]
    x, _ = study.evaluation_set
    with torch.no_grad():
        mean = torch.stack([m(x).softmax(1) for m in parts]).mean(0)
        torch.testing.assert_close(vanilla(x).exp(), mean)
    with pytest.raises(ValueError, match="not trained"):
        study.trained("vanilla")


def test_diagnostics_and_times(study):
    diagnostics = study.diagnostics("mat")
    assert len(diagnostics) == study.p.train.epochs * 3
    assert (diagnostics["cross_gradient_ratio"] > 0).all()
    assert diagnostics[diagnostics.member.str.contains("l2")]["sign_disagreement"].isna().all()
    times = study.time_table(SYSTEMS)
    assert times.loc["Linf AT", "x Linf AT"] == 1 and (times["seconds"] > 0).all()


def test_figure1_is_measured_on_the_training_attacks_inputs(study):
    """The last epoch's Figure 1/4 values are those of the trained MAT network on the training attack's adversarials
    of the diagnostic batch (same seed and radii), not on the clean images."""
    p, trained = study.p, study.trained("mat")
    last = trained.history[-1]
    _, inner, members, norms = study._recipe("mat")
    x_d, y_d = study._diagnostic_batch(members)
    epoch = p.train.epochs - 1
    generator = torch.Generator().manual_seed(epoch_seed(p.seed, epoch) + DIAGNOSTICS_STREAM)
    x_adv = inner(trained.model, x_d, y_d, generator, ramp_scale(epoch, p.ramp_epochs))
    assert last["cross_gradient_ratio"] == pytest.approx(cross_gradient_ratio(trained.model, x_adv, y_d).tolist())
    steps = study.norm_steps(norms)
    expected = sign_disagreement(trained.model, x_adv, y_d, steps).tolist()
    assert last["sign_disagreement"] == pytest.approx(expected, nan_ok=True)
    clean = cross_gradient_ratio(trained.model, x_d, y_d).tolist()
    assert last["cross_gradient_ratio"] != pytest.approx(clean)


def test_single_models_normalise_their_inputs_and_mimo_networks_read_raw_pixels(study):
    """The notebook's stated departure: the single models keep input normalisation (on raw pixels the MSD model's
    training was not reproducible across CPU kernels); the MIMO networks read raw [0, 1] pixels, as the authors'."""
    for name in ("standard", "linf_at", "msd"):
        assert any(isinstance(m, Normalize) for m in study.trained(name).model.modules()), name
    assert not any(isinstance(m, Normalize) for m in study.trained("mat").model.modules())


def test_bad_parameters_are_refused():
    with pytest.raises(params.ParamsError, match="unknown systems"):
        params.load("mimo_adversarial_training", "ci", {"systems": ["mat", "nonsense"]})
    with pytest.raises(params.ParamsError, match="vanilla"):
        params.load("mimo_adversarial_training", "ci", {"systems": ["vanilla", "linf_at"]})
    with pytest.raises(params.ParamsError, match="groups name attacks"):
        params.load("mimo_adversarial_training", "ci", {"groups": {"linf": ["PGD linf", "missing attack"]}})
    with pytest.raises(params.ParamsError, match="ramp_epochs=2 must be below train.epochs=2"):
        params.load("mimo_adversarial_training", "ci", {"ramp_epochs": 2})


def test_paper_profile_dry_run_on_mnist_shaped_fake_data(tmp_path, monkeypatch):
    """The paper profile's path (MNIST loader, MIMO ResNet-18 with 3 input channels, every system) on fake data of
    MNIST's shape, with one epoch, 2-step attacks and 4 evaluation images."""
    from advlib import data

    monkeypatch.setitem(
        data._LOADERS, "mnist", lambda request: data._load_fake(dataclasses.replace(request, shape=(1, 28, 28)))
    )
    overrides = {
        "device": "cpu",
        "data.n_train": 16,
        "train.epochs": 1,
        "train.batch_size": 8,
        "iterations": 2,
        "n_eval": 4,
        "diagnostics_images": 4,
        "curve_steps": 2,
        "systems": ["linf_at", "l2_at", "l1_at", "vanilla", "msd", "mat"],
        "eval_attacks": {
            "PGD linf": {"name": "pgd_linf", "eps": 0.3, "steps": 2},
            "PGD l1": {"name": "pgd_l1", "eps": 10.0, "steps": 2, "options": {"l1_k": 20}},
        },
        "groups": {"linf": ["PGD linf"], "l1": ["PGD l1"]},
        "transfer_attacks.linf.steps": 2,
        "transfer_attacks.l2.steps": 2,
        "transfer_attacks.l1.steps": 2,
    }
    p = params.load("mimo_adversarial_training", "paper", overrides)
    assert p.train.model == "resnet18" and p.threats["l1"].stepsize == 0.8
    study = MATStudy(p, "cpu", cache=Cache(tmp_path))
    table = study.robustness_table(["vanilla", "msd", "mat"])
    assert list(table.columns) == ["Vanilla Ensemble", "MSD", "MAT"]
    assert study.passes_table(["mat"]).loc["MAT", "forward"] == 3
    assert len(study.transfer_table("mat", "linf")) == 3
