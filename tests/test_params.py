"""Parameter loading: profiles, overrides, and errors that name the bad key and the allowed values."""

from __future__ import annotations

import pytest

from advlib import params
from advlib.params import ParamsError


@pytest.mark.parametrize("profile", ["ci", "default", "paper"])
def test_every_quickstart_profile_validates(profile):
    p = params.load("quickstart", profile)
    assert p.attacks and p.train.epochs >= 1


@pytest.mark.parametrize("stem", ["mixture_of_generators", "regroup"])
@pytest.mark.parametrize("profile", ["ci", "default", "paper"])
def test_every_paper_profile_validates(stem, profile):
    p = params.load(stem, profile)
    assert p.seed == 0 and p.data.name in ("mnist5k", "mnist", "imagenet")


def test_overrides_dict_and_strings_agree():
    a = params.load("quickstart", "ci", {"train.epochs": 3, "attacks.0.eps": 0.25})
    b = params.load("quickstart", "ci", ["train.epochs=3", "attacks.0.eps=0.25"])
    assert a == b
    assert a.train.epochs == 3 and a.attacks[0].eps == 0.25


def test_override_of_key_absent_from_yaml_uses_schema():
    p = params.load("quickstart", "ci", ["train.schedule=cosine"])
    assert p.train.schedule == "cosine"


def test_profile_may_be_a_path(tmp_path):
    text = (params.profile_path("quickstart", "ci")).read_text().replace("epochs: 1", "epochs: 4")
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    assert params.load("quickstart", str(path)).train.epochs == 4


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        (["eps_curve.eps=[-1]"], ["eps", "> 0"]),
        (["attacks.0.eps=-1"], ["attacks.0.eps", "greater than 0"]),
        (["attacks.0.name=fgsmm"], ["unknown attack 'fgsmm'", "pgd_linf"]),
        (["epoch=1"], ["unknown key 'epoch'", "train"]),
        (["train.epoch=1"], ["unknown key 'train.epoch'", "epochs"]),
        (["train.epochs=abc"], ["train.epochs", "integer", "'abc'"]),
        (["train.model=lenet6"], ["unknown model 'lenet6'", "lenet5"]),
        (["data.name=svhn"], ["unknown dataset 'svhn'", "mnist5k"]),
        (["device=tpu"], ["device 'tpu'", "cpu"]),
        (["train.optimizer=lbfgs"], ["train.optimizer", "adam", "sgd"]),
        (["attacks.9.eps=0.1"], ["index", "0..5"]),
        (["attacks.1.targeted=true", "attacks.0.targeted=true"], ["fgsm", "no targeted mode"]),
        (["n_eval=0"], ["n_eval", "greater than or equal to 1"]),
        (["threads=0"], ["threads"]),
        (["train.epochs"], ["key=value"]),
    ],
)
def test_bad_overrides_name_key_and_allowed(overrides, fragments):
    with pytest.raises(ParamsError) as info:
        params.load("quickstart", "ci", overrides)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_unknown_profile_and_stem():
    with pytest.raises(ParamsError, match="unknown profile 'fast'.*ci, default, paper"):
        params.load("quickstart", "fast")
    with pytest.raises(ParamsError, match="unknown notebook 'quickstrat'.*quickstart"):
        params.load("quickstrat", "ci")


def test_unknown_key_in_profile_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(params.profile_path("quickstart", "ci").read_text() + "colour: blue\n")
    with pytest.raises(ParamsError, match="unknown key 'colour'"):
        params.load("quickstart", str(path))


def test_override_values_are_yaml_not_code():
    with pytest.raises(ParamsError):
        params.load("quickstart", "ci", ["train.epochs=__import__('os').getpid()"])
