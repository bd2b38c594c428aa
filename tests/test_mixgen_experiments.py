"""The mixture-of-generators experiment plan: disjoint halves, unsupervised pools, cached systems, statistics."""
from __future__ import annotations

import logging

import pytest
import torch

from advlib import params
from advlib.cache import Cache
from advlib.experiments.mixture_of_generators import MixtureStudy, mean_and_errors

OVERRIDES = {"n_canonical": 48, "n_transformed": 48, "n_test": 32, "n_success": 16,
             "attack_sets": {1: ["FGSM"], 2: ["FGSM", "AUN"]}}


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
    joint, meta = study.system("joint", ["FGSM", "AUN"], seed=0)
    assert joint.num_generators == 2 and len(meta["history"]) == study.p.mixture.train_epochs
    with caplog.at_level(logging.INFO, logger="advlib"):
        again, _ = study.system("joint", ["FGSM", "AUN"], seed=0)
    assert "loaded joint mixture" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(joint.state_dict().values(), again.state_dict().values()))
    separately = study.separately_trained(["FGSM", "AUN"], seed=0)
    single_aun = study.system("single", ["AUN"], seed=0)[0].generators[0]
    assert all(torch.equal(a, b) for a, b in zip(separately.generators[1].state_dict().values(),
                                                 single_aun.state_dict().values()))
    assert separately.discriminator is joint.discriminator or all(
        torch.equal(a, b) for a, b in zip(separately.discriminator.state_dict().values(),
                                          joint.discriminator.state_dict().values()))
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
    import pandas as pd

    from advlib.experiments.mixture_of_generators import MixtureTables

    table6 = pd.DataFrame([{"kind": "joint", "experiment": "1", "3": 70.0},
                           {"kind": "faster", "experiment": "mean", "3": 60.0},
                           {"kind": "faster", "experiment": "std", "3": 5.0}])
    rows = MixtureTables.table6_reference_rows(table6)
    assert rows.loc["jointly_experiment1", "3"] == 70.0 and rows.loc["faster_pm", "3"] == 5.0
    assert rows.loc["jointly_experiment2"].isna().all()  # a run with one joint repeat
