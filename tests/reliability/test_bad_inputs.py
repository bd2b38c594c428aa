"""Bad input gets a clear error raised before expensive work, naming the bad value and the allowed ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlib import params
from advlib.attacks import create_attack
from advlib.cache import Cache
from advlib.data import dataset_info, load_dataset
from advlib.defenses.mat import MIMOStep, NormStep, mat_attack
from advlib.models import create_model
from advlib.models.mimo import create_mimo
from advlib.params import ParamsError, TrainSpec
from advlib.runtime import resolve_device
from advlib.train import ClassifierStep, fit


class SampleCounter(nn.Module):
    """Wraps a model and counts the images it has been asked to classify."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.seen = model, 0

    def forward(self, x):
        self.seen += len(x)
        return self.model(x)


def _images(n=4, channels=1, size=28, fill=None):
    x = torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(0))
    if fill is not None:
        x[0, 0, 0, 0] = fill
    return x


def _attack(x, y, name="pgd_linf", eps=0.3, model="lenet5_classic"):
    """Run a 100-step PGD on an untrained model; returns how many images the model saw before the error."""
    torch.manual_seed(0)
    counter = SampleCounter(create_model(model).eval())
    try:
        create_attack({"name": name, "eps": eps, "steps": 100})(counter, x, y)
    finally:
        _attack.seen = counter.seen


Y4 = torch.zeros(4, dtype=torch.long)
# (case, call, exception, regex that must match the message: the bad value and the allowed ones)
ATTACK_INPUTS = [
    (
        "NaN pixel",
        lambda: _attack(_images(fill=float("nan")), Y4),
        ValueError,
        r"NaN or Inf.*allowed: finite values in \[0, 1\]",
    ),
    (
        "+Inf pixel",
        lambda: _attack(_images(fill=float("inf")), Y4),
        ValueError,
        r"NaN or Inf.*allowed: finite values in \[0, 1\]",
    ),
    ("-Inf pixel", lambda: _attack(_images(fill=float("-inf")), Y4), ValueError, r"NaN or Inf.*allowed"),
    (
        "pixel above 1",
        lambda: _attack(_images(fill=1.5), Y4),
        ValueError,
        r"span \[.*, 1\.5\]; allowed range is \[0, 1\]",
    ),
    (
        "pixel below 0",
        lambda: _attack(_images(fill=-0.2), Y4),
        ValueError,
        r"span \[-0\.2, .*\]; allowed range is \[0, 1\]",
    ),
    ("0-255 images", lambda: _attack(_images() * 255, Y4), ValueError, r"allowed range is \[0, 1\]"),
    (
        "3-d batch",
        lambda: _attack(torch.rand(4, 28, 28), Y4),
        ValueError,
        r"4-d batch \(N, C, H, W\), got shape \(4, 28, 28\)",
    ),
    ("empty batch", lambda: _attack(torch.rand(0, 1, 28, 28), Y4[:0]), ValueError, r"empty batch"),
    (
        "RGB into a 1-channel model",
        lambda: _attack(_images(channels=3), Y4),
        ValueError,
        r"cannot read images of shape \(3, 28, 28\)",
    ),
    (
        "32x32 into a 28x28 MLP",
        lambda: _attack(_images(size=32), Y4, model="mlp1200"),
        ValueError,
        r"cannot read images of shape \(1, 32, 32\)",
    ),
    (
        "label 12 of 10 classes",
        lambda: _attack(_images(), torch.tensor([0, 1, 12, 3])),
        ValueError,
        r"labels span \[0, 12\].*allowed labels 0\.\.9",
    ),
    (
        "negative label",
        lambda: _attack(_images(), torch.tensor([0, -1, 2, 3])),
        ValueError,
        r"labels span \[-1, 3\].*allowed labels 0\.\.9",
    ),
    (
        "labels of the wrong length",
        lambda: _attack(_images(), Y4[:3]),
        ValueError,
        r"labels must have shape \(4,\), got \(3,\)",
    ),
    ("eps = 0", lambda: _attack(_images(), Y4, eps=0.0), ValueError, r"eps must be > 0, got 0"),
    ("eps < 0", lambda: _attack(_images(), Y4, eps=-0.1), ValueError, r"eps must be > 0, got -0\.1"),
    ("unknown attack", lambda: _attack(_images(), Y4, name="pgd_l7"), ValueError, r"'pgd_l7'.*pgd_linf"),
]


def _params(stem="quickstart", profile="ci", overrides=None):
    return params.load(stem, profile, overrides or [])


PARAM_INPUTS = [
    ("unknown notebook", lambda: _params("quikstart"), ParamsError, r"'quikstart'; allowed: .*quickstart"),
    ("unknown profile", lambda: _params(profile="huge"), ParamsError, r"'huge' .*allowed: ci, default, paper"),
    (
        "unknown model (override)",
        lambda: _params(overrides=["train.model=resnet999"]),
        ParamsError,
        r"'resnet999'.*allowed: .*lenet5",
    ),
    (
        "unknown dataset (override)",
        lambda: _params(overrides=["data.name=svhn"]),
        ParamsError,
        r"'svhn'.*allowed: .*mnist5k",
    ),
    (
        "unknown key (override)",
        lambda: _params(overrides=["train.epochz=3"]),
        ParamsError,
        r"'train.epochz'; allowed: .*epochs",
    ),
    (
        "string for an integer",
        lambda: _params(overrides=["train.epochs=many"]),
        ParamsError,
        r"train.epochs: .*integer.*'many'",
    ),
    ("list for an integer", lambda: _params(overrides=["seed=[1, 2]"]), ParamsError, r"seed: .*integer.*\[1, 2\]"),
    (
        "epochs = 0",
        lambda: _params(overrides=["train.epochs=0"]),
        ParamsError,
        r"train.epochs: .*greater than or equal to 1.*got 0",
    ),
    (
        "batch_size = 0",
        lambda: _params(overrides=["train.batch_size=0"]),
        ParamsError,
        r"train.batch_size: .*>= ?1|greater than or equal to 1.*got 0",
    ),
    (
        "unknown schedule",
        lambda: _params(overrides=["train.schedule=linear"]),
        ParamsError,
        r"'constant', .*'triangle' \(got 'linear'\)",
    ),
    (
        "unknown optimizer",
        lambda: _params(overrides=["train.optimizer=lbfgs"]),
        ParamsError,
        r"'adam' or 'sgd' \(got 'lbfgs'\)",
    ),
    (
        "unknown device (override)",
        lambda: _params(overrides=["device=tpu"]),
        ParamsError,
        r"'tpu' is not allowed; choose one of auto, cpu",
    ),
    (
        "threads = 0",
        lambda: _params(overrides=["threads=0"]),
        ParamsError,
        r"threads: .*greater than or equal to 1.*got 0",
    ),
    (
        "override without '='",
        lambda: _params(overrides=["train.epochs"]),
        ParamsError,
        r"'train.epochs' is not of the form key=value",
    ),
    (
        "attack eps = 0 (override)",
        lambda: _params(overrides=["attacks.1.eps=0"]),
        ParamsError,
        r"attacks.1.eps: .*greater than 0.*got 0",
    ),
    (
        "unknown attack (override)",
        lambda: _params(overrides=["attacks.1.name=pgd_l7"]),
        ParamsError,
        r"'pgd_l7'; allowed: .*pgd_linf",
    ),
    (
        "MAT: unknown system",
        lambda: _params("mimo_adversarial_training", overrides={"systems": ["mat", "mat_l5"]}),
        ParamsError,
        r"mat_l5.*allowed.*mat_msd",
    ),
    (
        "MAT: no members (M < 1)",
        lambda: _params("mimo_adversarial_training", overrides={"members": []}),
        ParamsError,
        r"members: .*at least 1",
    ),
    (
        "MAT: unknown member norm",
        lambda: _params("mimo_adversarial_training", overrides={"members": ["linf", "l3"]}),
        ParamsError,
        r"'linf', 'l2' or 'l1' \(got 'l3'\)",
    ),
    (
        "REGroup: k = 0",
        lambda: _params("regroup", overrides=["k=0"]),
        ParamsError,
        r"k: .*greater than or equal to 1.*got 0",
    ),
]


def _unknown_key_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text((params.profile_path("quickstart", "ci")).read_text() + "epochz: 3\n")
    return params.load("quickstart", path)


def _not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    return params.load("quickstart", path)


def _regroup_k_too_large(tmp_path):
    from advlib.experiments.regroup import RegroupStudy

    RegroupStudy(params.load("regroup", "ci", ["k=40"]), "cpu", cache=Cache(tmp_path))


def _empty_training_set(_):
    fit(
        ClassifierStep(
            create_model("mlp1200", width=8, depth=1),
            torch.utils.data.TensorDataset(torch.rand(0, 1, 28, 28), torch.zeros(0, dtype=torch.long)),
            TrainSpec(model="mlp1200", epochs=1),
        )
    )


def _empty_mimo_training_set(_):
    MIMOStep(
        create_mimo("mlp1200", dataset_info("mnist5k"), 3, width=8, depth=1),
        torch.utils.data.TensorDataset(torch.rand(0, 1, 28, 28), torch.zeros(0, dtype=torch.long)),
        TrainSpec(model="mlp1200", epochs=1),
        members=3,
    )


OTHER_INPUTS = [
    ("params file with an unknown key", _unknown_key_file, ParamsError, r"unknown key 'epochz'; allowed: .*seed"),
    ("params file that is a list", _not_a_mapping, ParamsError, r"must hold a mapping of keys, got list"),
    (
        "REGroup k above the layer count",
        _regroup_k_too_large,
        ValueError,
        r"k=40 is larger than the number of layers \d+ .*allowed 1\.\.\d+",
    ),
    ("empty training set", _empty_training_set, ValueError, r"empty"),
    ("empty MIMO training set", _empty_mimo_training_set, ValueError, r"training set is empty"),
    ("unknown model", lambda _: create_model("resnet999"), ValueError, r"'resnet999'; choose one of .*lenet5"),
    ("unknown dataset", lambda _: load_dataset("svhn", "train"), ValueError, r"'svhn'; choose one of .*mnist5k"),
    (
        "unknown split",
        lambda _: load_dataset("mnist5k", "validation"),
        ValueError,
        r"'validation' .*choose one of train, test",
    ),
    (
        "more samples than the split has",
        lambda _: load_dataset("mnist5k", "test", n=10**6),
        ValueError,
        r"n=1000000 exceeds the 1000 samples",
    ),
    ("negative sample count", lambda _: load_dataset("mnist5k", "test", n=-3), ValueError, r"n=-3"),
    (
        "unknown device",
        lambda _: resolve_device("tpu"),
        ValueError,
        r"'tpu' is not allowed; choose one of auto, cpu, cuda, mps",
    ),
    (
        "MIMO with M = 0",
        lambda _: create_mimo("lenet5", dataset_info("mnist5k"), 0),
        ValueError,
        r"members >= 1; got M=0",
    ),
    (
        "unknown norm for a MAT member",
        lambda _: NormStep("l3", 1.0, 0.1),
        ValueError,
        r"'l3' is not allowed; choose one of linf, l2, l1",
    ),
    ("MAT step size 0", lambda _: NormStep("l2", 1.0, 0.0), ValueError, r"must be > 0; got eps=1.0, stepsize=0.0"),
    (
        "MAT: one norm for three members",
        lambda _: mat_attack(
            create_mimo("mlp1200", dataset_info("mnist5k"), 3, width=8, depth=1),
            torch.rand(2, 3, 1, 28, 28),
            torch.zeros(2, 3, dtype=torch.long),
            [NormStep("linf", 0.3, 0.1)],
            3,
        ),
        ValueError,
        r"1 norm steps for M=3 members",
    ),
    (
        "cache kind with a path",
        lambda _: Cache("/tmp").entry_dir("../x", "k"),
        ValueError,
        r"'\.\./x' must be lowercase letters",
    ),
]


def _check(call, exception, pattern, arg=None):
    with pytest.raises(exception) as info:
        call() if arg is None else call(arg)
    import re

    assert re.search(pattern, str(info.value), re.S), f"message {str(info.value)!r} does not match {pattern!r}"


@pytest.mark.parametrize("case, call, exception, pattern", ATTACK_INPUTS, ids=[c[0] for c in ATTACK_INPUTS])
def test_bad_attack_input_is_refused_before_the_attack_runs(case, call, exception, pattern, ledger):
    _attack.seen = 0
    _check(call, exception, pattern)
    assert _attack.seen <= 1, f"{case}: the model classified {_attack.seen} images before the error"
    ledger.record("bad input", case, "clear error before work")


@pytest.mark.parametrize("case, call, exception, pattern", PARAM_INPUTS, ids=[c[0] for c in PARAM_INPUTS])
def test_bad_parameter_is_refused_at_load(case, call, exception, pattern, ledger):
    _check(call, exception, pattern)
    ledger.record("bad input", case, "clear error before work")


@pytest.mark.parametrize("case, call, exception, pattern", OTHER_INPUTS, ids=[c[0] for c in OTHER_INPUTS])
def test_bad_call_is_refused(case, call, exception, pattern, tmp_path, ledger):
    _check(call, exception, pattern, tmp_path)
    assert list(Cache(tmp_path).entries()) == []  # nothing was built
    ledger.record("bad input", case, "clear error before work")


def test_at_least_thirty_distinct_bad_inputs_are_tried():
    cases = [c[0] for c in ATTACK_INPUTS + PARAM_INPUTS + OTHER_INPUTS]
    assert len(set(cases)) == len(cases) >= 30
