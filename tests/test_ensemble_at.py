"""Strength in Numbers: ensemble output, Algorithm 1's gradient flow, parameter matching, smoothing, the study."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from advlib import params
from advlib.attacks.pgd import attack_loss
from advlib.cache import Cache
from advlib.defenses.ensemble_at import (
    SYSTEMS,
    MeanMemberMargin,
    average_seeds,
    build_ensemble,
    member_gradients_reached,
    member_margin_attack,
    remove_outliers,
    strongest_attack,
    system_spec,
    with_mode,
)
from advlib.evaluate import accuracy_vs_steps
from advlib.experiments.base import MissingResult
from advlib.experiments.strength_in_numbers import (
    EnsembleStudy,
    best_ifgsm_evaluation,
    final_window,
    last_evaluations,
)
from advlib.models import Ensemble, count_parameters, create_model


def _builder():
    return create_model("width_cnn", width=0.5)


def test_ensemble_output_is_the_mean_of_member_probabilities():
    ensemble = build_ensemble(_builder, 3, seed=0).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        want = torch.stack([m(x).softmax(1) for m in ensemble.members]).mean(0)
        torch.testing.assert_close(ensemble(x).exp(), want)
        torch.testing.assert_close(
            with_mode(ensemble, "logit")(x), torch.stack([m(x) for m in ensemble.members]).mean(0)
        )


def _fixed_member(logits: list[list[float]]) -> torch.nn.Module:
    """A member whose logits are `logits` (one row per image) plus a linear term in the image, for gradients."""
    member = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        member[1].weight.copy_(torch.arange(12.0).view(3, 4).sin())
        member[1].bias.zero_()
    rows = torch.tensor(logits)

    class Member(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = member

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return rows[: len(x)] + self.net(x)

    return Member()


def test_mean_member_margin_is_the_mean_of_the_members_margins_not_the_logit_average():
    """Figure 3's transfer target: z1 = [3, 1, 0], z2 = [0, 2, 2.5]. True class 0: margins -2 and 2.5, mean 0.25;
    the logit average [1.5, 1.5, 1.25] has margin 0, and so has the mean of log-softmaxes (the old target).
    True class 2: margins 3 and -0.5, mean 1.25; the logit average's margin is 0.25."""
    members = [_fixed_member([[3.0, 1.0, 0.0]] * 2), _fixed_member([[0.0, 2.0, 2.5]] * 2)]
    x, y = torch.zeros(2, 1, 2, 2), torch.tensor([0, 2])
    ones = torch.ones_like(y)
    with torch.no_grad():
        mean_margin = attack_loss(MeanMemberMargin(members, y)(x), ones, "margin")
        logit_average = attack_loss(Ensemble(members, mode="logit")(x), y, "margin")
        log_softmax_mean = torch.stack([m(x).log_softmax(1) for m in members]).mean(0)
        old = attack_loss(log_softmax_mean, y, "margin")
    torch.testing.assert_close(mean_margin, torch.tensor([0.25, 1.25]))
    torch.testing.assert_close(logit_average, torch.tensor([0.0, 0.25]))
    torch.testing.assert_close(old, logit_average)  # why the old "transfer" series equalled "remove softmax"
    with pytest.raises(ValueError, match="bound to 2 labels"):
        MeanMemberMargin(members, y)(torch.zeros(3, 1, 2, 2))


def test_member_margin_attack_ascends_the_mean_member_margin():
    """One sign step without a random start moves every pixel along the gradient of the mean of member margins."""
    members = [_fixed_member([[3.0, 1.0, 0.0]] * 2), _fixed_member([[0.0, 2.0, 2.5]] * 2)]
    x, y = torch.full((2, 1, 2, 2), 0.5), torch.tensor([0, 2])
    spec = {
        "name": "pgd_linf",
        "eps": 0.1,
        "steps": 1,
        "stepsize": 0.1,
        "options": {"loss": "margin", "random_start": False},
    }
    x_adv = member_margin_attack(members, spec, x, y, batch_size=1)
    probe = x.clone().requires_grad_(True)
    margins = torch.stack([attack_loss(m(probe), y, "margin") for m in members]).mean(0).sum()
    (grad,) = torch.autograd.grad(margins, probe)
    torch.testing.assert_close(x_adv, x + 0.1 * grad.sign())
    with pytest.raises(ValueError, match="needs loss 'margin'"):
        member_margin_attack(members, {**spec, "options": {"loss": "ce"}}, x, y)


def _synthetic_curves(epochs: int = 6) -> pd.DataFrame:
    """Seed-averaged curves (long format) of a plain model: IFGSM5 is 0-4 of 150 images, highest at epoch 1 when its
    clean accuracy is still 60%; an adversarial model whose IFGSM5 peaks one evaluation before the last."""
    plain = {"clean": [60, 80, 85, 88, 90, 91], "IFGSM5": [2.7, 1.3, 0, 0, 0.7, 0]}
    adv = {"clean": [50, 70, 80, 85, 90, 91.5], "IFGSM5": [10, 30, 40, 50, 62, 61]}
    rows = []
    for name, curves in (("Baseline", plain), ("SingleAdv", adv)):
        for score in ("clean", "IFGSM5", "PGD5", "PGD20", "blackbox"):
            values = curves.get(score, [0.0] * epochs)
            rows += [
                {"system": name, "score": score, "epoch": float(e + 1), "accuracy": v} for e, v in enumerate(values)
            ]
    return pd.DataFrame(rows)


def test_table1_reads_the_final_evaluations_not_the_noise_of_the_first():
    assert [final_window(n) for n in (1, 6, 100, 149, 150, 500, 1000, 1280, 100000)] == [1, 1, 1, 1, 2, 5, 10, 10, 10]
    with pytest.raises(ValueError, match="evaluations must be >= 1"):
        final_window(0)
    curves = _synthetic_curves()
    wide = curves[curves.system == "Baseline"].pivot(index="epoch", columns="score", values="accuracy")
    assert wide["IFGSM5"].idxmax() == 1.0  # the old rule: the argmax over all six evaluations picks epoch 1's noise
    table1b = best_ifgsm_evaluation(curves)
    assert table1b.loc["Baseline", "epoch"] == 6.0 and table1b.loc["Baseline", "clean"] == 91
    assert table1b.loc["SingleAdv", "epoch"] == 6.0  # a window of one evaluation: the last, whatever its IFGSM5
    wider = best_ifgsm_evaluation(curves, last=3)
    assert wider.loc["SingleAdv", "epoch"] == 5.0 and wider.loc["Baseline", "epoch"] == 5.0  # best of epochs 4-6
    table1a = last_evaluations(curves, ["Baseline", "SingleAdv"])
    assert table1a.loc["Baseline", "clean"] == 91 and table1a.loc["SingleAdv", "IFGSM5"] == 61  # not epoch 1's


def test_members_are_initialised_differently_and_reproducibly():
    a, b = build_ensemble(_builder, 2, seed=0), build_ensemble(_builder, 2, seed=0)
    first = [p.detach().clone() for p in a.members[0].parameters()]
    second = [p.detach().clone() for p in a.members[1].parameters()]
    assert not all(torch.equal(u, v) for u, v in zip(first, second))
    assert all(torch.equal(u, v) for u, v in zip(first, [p.detach() for p in b.members[0].parameters()]))


def test_training_attack_gradient_reaches_every_member():
    ensemble = build_ensemble(_builder, 4, seed=1)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    spec = {"name": "pgd_linf", "eps": 0.3, "steps": 7, "options": {"start_sigma": 0.15}}
    assert member_gradients_reached(ensemble, x, y, spec) == [True] * 4


def test_double_adv_has_about_the_parameters_of_ensemble2():
    base = count_parameters(create_model("width_cnn", width=1.0))
    double = count_parameters(create_model("width_cnn", width=1.42))
    assert abs(double - 2 * base) / (2 * base) < 0.10
    p = params.load("strength_in_numbers", "default")
    assert p.double_options == {"width": 1.42} and p.train.model_options == {"width": 1.0}


def test_systems_are_the_papers_eight():
    assert list(SYSTEMS) == [
        "Baseline",
        "Ensemble2",
        "Ensemble4",
        "SingleAdv",
        "DoubleAdv",
        "Ensemble2Adv",
        "Ensemble4Adv",
        "Separate2Adv",
    ]
    assert system_spec("Ensemble4Adv").members == 4 and system_spec("DoubleAdv").wide
    with pytest.raises(ValueError, match="unknown system 'Triple'"):
        system_spec("Triple")


def test_gaussian_start_stays_in_the_ball_and_is_seeded():
    from advlib.attacks import run_attack

    model = _builder().eval()
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    spec = {"name": "pgd_linf", "eps": 0.1, "steps": 1, "stepsize": 1e-6, "options": {"start_sigma": 0.05}}
    a, b = run_attack(spec, model, x, y), run_attack(spec, model, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    assert (a.x_adv - x).abs().max() <= 0.1 + 1e-6 and a.x_adv.min() >= 0 and a.x_adv.max() <= 1
    with pytest.raises(ValueError, match="start_sigma"):
        run_attack({**spec, "options": {"start_sigma": -1.0}}, model, x, y)


def test_outlier_removal_replaces_only_spikes():
    values = np.linspace(50, 60, 200)
    spiky = values.copy()
    spiky[[40, 120]] = [0.0, 100.0]
    cleaned = remove_outliers(spiky)
    assert abs(cleaned[40] - values[40]) < 1 and abs(cleaned[120] - values[120]) < 1
    assert np.allclose(np.delete(cleaned, [40, 120]), np.delete(spiky, [40, 120]))


def test_seed_average_interpolates_onto_one_grid():
    grid, mean = average_seeds([([0, 10], [0.0, 10.0]), ([0, 5, 10], [2.0, 7.0, 12.0])], points=3)
    assert grid.tolist() == [0.0, 5.0, 10.0]
    assert mean.tolist() == [1.0, 6.0, 11.0]


def test_strongest_attack_doubles_until_accuracy_stops_falling():
    model = _builder().eval()
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    best, steps, tried = strongest_attack(
        model, x, y, {"name": "pgd_linf", "eps": 0.3, "stepsize": 0.01}, start_steps=1, max_steps=16
    )
    assert [s for s, _ in tried][:2] == [1, 2] and all(b == 2 * a for (a, _), (b, _) in zip(tried, tried[1:]))
    assert best == min(a for _, a in tried) and steps in [s for s, _ in tried]
    assert len(tried) == 5 or tried[-1][1] >= tried[-2][1]  # stopped at the cap or when accuracy stopped falling


def test_steps_curve_from_one_recording_run_equals_separate_runs():
    model = _builder().eval()
    x, y = torch.rand(12, 1, 28, 28), torch.randint(0, 10, (12,))
    spec = {"name": "pgd_linf", "eps": 0.3, "stepsize": 0.02, "options": {"update": "adam"}, "seed": 3}
    curve = accuracy_vs_steps(model, x, y, spec, 8).set_index("steps")["accuracy"]
    from advlib.attacks import run_attack

    for steps in (1, 2, 5, 8):
        result = run_attack({**spec, "steps": steps}, model, x, y)
        with torch.no_grad():
            separate = 100 * float((model(result.x_adv).argmax(1) == y).float().mean())
        assert math.isclose(curve[steps], separate), steps


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    p = params.load("strength_in_numbers", "ci", {"systems": ["Baseline", "SingleAdv", "Ensemble2Adv", "Separate2Adv"]})
    return EnsembleStudy(p, "cpu", cache=Cache(tmp_path_factory.mktemp("cache")))


def test_study_histories_tables_and_cache(study):
    trained = study.system("Ensemble2Adv", 0)
    model, history = trained.model, trained.history
    assert len(model.members) == 2 and len(history) == study.p.train.epochs
    assert set(history[0]) >= {"clean", "IFGSM5", "PGD5", "PGD20", "blackbox", "epoch"}
    separate = study.system("Separate2Adv", 0)
    single_a, single_b = study.system("SingleAdv", 0).model, study.system("SingleAdv", 1000).model
    assert separate.history == []
    assert separate.model.members[0] is single_a.members[0] and separate.model.members[1] is single_b.members[0]
    again = EnsembleStudy(study.p, "cpu", cache=study.cache).system("Ensemble2Adv", 0)
    assert again.history == history and again.key == trained.key
    torch.testing.assert_close(again.model.state_dict(), model.state_dict(), rtol=0, atol=0)
    curves = study.curves()
    assert set(curves["system"]) == {"Baseline", "SingleAdv", "Ensemble2Adv"}
    table1a = study.table1a()
    assert list(table1a.columns) == ["clean", "IFGSM5", "PGD5", "PGD20", "blackbox"]
    final = history[-1]
    window = final_window(len(history))
    assert table1a.loc["Ensemble2Adv", "clean"] == pytest.approx(np.mean([h["clean"] for h in history[-window:]]))
    assert final["PGD20"] <= final["clean"]
    counts = study.parameter_counts()
    assert counts.loc["Ensemble2Adv", "parameters"] == 2 * counts.loc["SingleAdv", "parameters"]


def test_evaluated_tables_are_cached_under_the_systems_keys(study, caplog):
    steps = study.steps_curves()
    assert set(steps["system"]) == set(study.p.systems)
    with caplog.at_level(logging.INFO, logger="advlib"):
        again = EnsembleStudy(study.p, "cpu", cache=study.cache).steps_curves()
    assert "loaded figure2c" in caplog.text
    pd.testing.assert_frame_equal(again, steps, check_exact=True)
    keys = {
        (name, seed): study.system(name, seed).key
        for name, seed in [
            ("SingleAdv", 0),
            ("SingleAdv", 1000),
            ("SingleAdv", 1),
            ("Ensemble2Adv", 1),
            ("Separate2Adv", 0),
        ]
    }
    assert len(set(keys.values())) == len(keys)  # every system and seed has its own key
    separate = study.key("separate", system="Separate2Adv", members=[keys["SingleAdv", 0], keys["SingleAdv", 1000]])
    assert keys["Separate2Adv", 0] == separate.key  # a test-time ensemble is named by its members' keys


def test_every_key_part_names_the_system(study):
    """A change to any parameter the training or its evaluation history depends on gives another system key."""
    base = study.system("SingleAdv", 0).key
    for change in (
        {"rho": 0.5},
        {"n_eval": 16},
        {"seed": 1},
        {"train.lr": 0.002},
        {"train_attack.steps": 3},
        {"eval_attacks.PGD20.steps": 3},
        {"blackbox_attack.steps": 3},
    ):
        p = params.load("strength_in_numbers", "ci", {"systems": ["SingleAdv"], **change})
        other = EnsembleStudy(p, "cpu", cache=study.cache)
        assert other._system_key("SingleAdv", 0).key != base, change
    assert study._system_key("SingleAdv", 0).key == base
    download = params.load("strength_in_numbers", "ci", {"systems": ["SingleAdv"], "data.download": True})
    assert EnsembleStudy(download, "cpu", cache=study.cache)._system_key("SingleAdv", 0).key == base


def test_declared_artifacts_and_pairings(study, tmp_path, monkeypatch):
    """Every table of the notebook is a declared artifact; the paired ones give the paper-vs-run summary in the
    order the run made them, and claims citing a table the run lacks are a MissingResult."""
    assert set(EnsembleStudy.artifacts) >= {
        "parameters",
        "curves",
        "table1a",
        "table1b",
        "table1c",
        "figure2c",
        "table2",
        "table2_doubling",
        "figure3",
        "paper_vs_run",
        "claims",
    }
    assert EnsembleStudy.artifacts["paper_vs_run"].floatfmt == 3
    monkeypatch.setenv("ADVLIB_FIGURES", str(tmp_path))
    out = SimpleNamespace(stem=EnsembleStudy.stem, profile="ci")
    fresh = EnsembleStudy(study.p, "cpu", cache=study.cache)
    with pytest.raises(MissingResult, match="table1a"):
        fresh.publish("claims", out)
    fresh.publish("table1c", out)
    table1a = fresh.publish("table1a", out)
    summary = fresh.publish("paper_vs_run", out)
    assert list(summary.index.get_level_values("artifact").unique()) == ["table1c", "table1a"]
    assert summary.loc[("table1a", "SingleAdv / clean"), "run"] == pytest.approx(
        table1a.loc["SingleAdv", "clean"] / 100
    )
    assert (tmp_path / "strength_in_numbers" / "ci" / "paper_vs_run.csv").is_file()


def test_bad_strength_in_numbers_parameters():
    with pytest.raises(params.ParamsError, match="unknown systems \\['Triple'\\]"):
        params.load("strength_in_numbers", "ci", {"systems": ["Triple"]})
    with pytest.raises(params.ParamsError, match="train.adversary must be empty"):
        params.load("strength_in_numbers", "ci", {"train.adversary": {"name": "fgsm", "eps": 0.3}})
    with pytest.raises(params.ParamsError, match="multistep"):
        params.load("strength_in_numbers", "ci", {"train.schedule": "multistep"})


def test_paper_profile_dry_run_on_fake_data(tmp_path):
    """The paper's code path (SGD with the multistep schedule, CIFAR-shaped images, every system, two seeds
    averaged, Appendix A) on fake data, with the WRN shrunk to depth 10 so that it runs on a CPU in seconds."""
    tiny = {
        "model": "wrn",
        "model_options": {"depth": 10, "width": 1},
        "epochs": 1,
        "batch_size": 4,
        "lr": 0.1,
        "optimizer": "sgd",
    }
    overrides = {
        "data.name": "fake",
        "data.n_train": 8,
        "device": "cpu",
        "n_eval": 4,
        "seeds": [0, 1],
        "train.model_options": {"depth": 10, "width": 1},
        "train.epochs": 2,
        "train.batch_size": 4,
        "train.milestones": [1],
        "double_options": {"width": 2},
        "train_attack.steps": 1,
        "eval_attacks.PGD20.steps": 2,
        "blackbox_sources": [tiny, {**tiny, "model": "vgg_small", "model_options": {}}],
        "blackbox_attack.steps": 1,
        "steps_curve.steps": 3,
        "long_attacks.IFGSM.steps": 2,
        "long_attacks.PGD.steps": 2,
        "strongest.start_steps": 1,
        "strongest.max_steps": 2,
        "transfer_steps": [1, 2],
    }
    p = params.load("strength_in_numbers", "paper", overrides)
    assert p.train.schedule == "multistep" and p.train.optimizer == "sgd" and p.train.gamma == 0.2
    study = EnsembleStudy(p, "cpu", cache=Cache(tmp_path))
    curves = study.curves()
    assert set(curves["system"]) == set(p.systems) - {"Separate2Adv"}
    assert len(study.table1a()) == 7 and len(study.table1b()) == 7
    assert list(study.table1c().index) == p.systems
    assert set(study.steps_curves()["steps"]) == {0, 1, 2, 3}
    table2 = study.table2()
    assert list(table2.index) == ["Model 1", "Model 2", "Model 3", "Model 4", "Ensemble", "Ensemble (remove softmax)"]
    assert len(study.figure3()) == 6
