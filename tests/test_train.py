"""Training: learns, is deterministic, resumes from a checkpoint to the same weights, adversarial mode works."""

from __future__ import annotations

import pytest
import torch

from advlib.cache import Cache
from advlib.data import load_dataset, to_tensors
from advlib.evaluate import accuracy
from advlib.models import create_model
from advlib.params import AttackSpec, DataSpec, TrainSpec
from advlib.train import ClassifierStep, fit, train_classifier

SPEC = TrainSpec(model="lenet5_classic", epochs=3, batch_size=50, lr=2e-3, schedule="cosine")


@pytest.fixture(scope="module")
def small_train():
    return load_dataset("mnist5k", "train", n=600)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _fresh() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("lenet5_classic")


def test_fit_learns_and_is_deterministic(small_train, mnist_test):
    a, b = _fresh(), _fresh()
    history = fit(ClassifierStep(a, small_train, SPEC, eval_data=mnist_test), seed=1)
    fit(ClassifierStep(b, small_train, SPEC), seed=1)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["test_acc"] > 0.6
    assert all(torch.equal(v, _weights(b)[k]) for k, v in _weights(a).items())


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_identical_weights(small_train, tmp_path):
    reference = _fresh()
    fit(ClassifierStep(reference, small_train, SPEC), seed=1)

    def stop_after_first(epoch, model, record):
        if epoch == 1:
            raise Interrupt

    interrupted = _fresh()
    with pytest.raises(Interrupt):
        fit(ClassifierStep(interrupted, small_train, SPEC), seed=1, checkpoint_dir=tmp_path, on_epoch=stop_after_first)
    assert (tmp_path / "checkpoint.safetensors").is_file()
    resumed = _fresh()  # a new process would start from fresh weights too
    history = fit(ClassifierStep(resumed, small_train, SPEC), seed=1, checkpoint_dir=tmp_path)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    for key, value in _weights(reference).items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_adversarial_training_improves_robustness(mnist_test):
    train_set = load_dataset("mnist5k", "train", n=2000)
    adv_spec = SPEC.model_copy(
        update={"adversary": AttackSpec(name="pgd_linf", eps=0.15, steps=3, stepsize=0.06), "adv_weight": 0.5}
    )
    clean_model, robust_model = _fresh(), _fresh()
    fit(ClassifierStep(clean_model, train_set, SPEC), seed=1)
    fit(ClassifierStep(robust_model, train_set, adv_spec), seed=1)
    x, y = mnist_test
    from advlib.attacks import run_attack

    def robust_acc(model):
        torch.manual_seed(0)
        result = run_attack({"name": "pgd_linf", "eps": 0.15, "steps": 10}, model, x, y)
        return float(((model(x).argmax(1) == y) & ~result.success).float().mean())

    assert robust_acc(robust_model) > robust_acc(clean_model) + 0.1


def test_train_classifier_caches(tmp_path):
    data = DataSpec(name="mnist5k", n_train=300, n_test=100)
    spec = TrainSpec(model="lenet5_classic", epochs=1)
    first = train_classifier(spec, data, seed=0, cache=Cache(tmp_path))
    second = train_classifier(spec, data, seed=0, cache=Cache(tmp_path))
    assert first.key == second.key
    x, y = to_tensors(load_dataset("mnist5k", "test", n=100))
    assert accuracy(first.model, x, y) == accuracy(second.model, x, y)
    assert all(torch.equal(v, second.model.state_dict()[k]) for k, v in first.model.state_dict().items())
    other = train_classifier(spec, data, seed=1, cache=Cache(tmp_path))
    assert other.key != first.key
    assert not (tmp_path / "checkpoints" / "model" / first.key).exists()  # checkpoints removed once stored


def test_empty_dataset_rejected():
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        fit(ClassifierStep(_fresh(), empty, SPEC))


def test_pure_adversarial_training_reports_adversarial_accuracy(small_train):
    spec = SPEC.model_copy(update={"epochs": 1, "adversary": AttackSpec(name="fgsm", eps=0.3)})
    clean, adversarial = _fresh(), _fresh()
    clean_acc = fit(ClassifierStep(clean, small_train, SPEC.model_copy(update={"epochs": 1})), seed=1)[0]["train_acc"]
    adv_acc = fit(ClassifierStep(adversarial, small_train, spec), seed=1)[0]["train_acc"]
    assert adv_acc < clean_acc  # measured on the FGSM batches the loss saw
    assert not all(torch.equal(v, clean.state_dict()[k]) for k, v in adversarial.state_dict().items())


def test_records_added_by_the_epoch_callback_survive_a_resume(small_train, tmp_path):
    def add_score(epoch, model, record):
        record["score"] = 10.0 * epoch
        if epoch == 1 and not (tmp_path / "resumed").exists():
            (tmp_path / "resumed").touch()
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(ClassifierStep(_fresh(), small_train, SPEC), seed=1, checkpoint_dir=tmp_path, on_epoch=add_score)
    history = fit(ClassifierStep(_fresh(), small_train, SPEC), seed=1, checkpoint_dir=tmp_path, on_epoch=add_score)
    assert [h["score"] for h in history] == [10.0 * (i + 1) for i in range(SPEC.epochs)]


def test_regularizer_is_added_to_every_batch_loss(small_train):
    plain, shrunk = _fresh(), _fresh()
    fit(ClassifierStep(plain, small_train, SPEC), seed=1)
    calls = []

    def weight_penalty(model, x, y):
        calls.append(len(x))
        return 0.05 * sum(p.pow(2).sum() for p in model.parameters())

    history = fit(ClassifierStep(shrunk, small_train, SPEC, regularizer=weight_penalty), seed=1)
    norm = lambda m: float(sum(p.detach().pow(2).sum() for p in m.parameters()))
    assert sum(calls) == SPEC.epochs * len(small_train)  # once per batch, on every sample
    assert norm(shrunk) < norm(plain) and history[0]["loss"] > 0


@pytest.mark.parametrize("onednn", [True, False])
def test_batches_go_in_as_channels_last_under_onednn_only(small_train, onednn):
    model, seen = _fresh(), []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].stride(1) == 1))  # NHWC strides
    with torch.backends.mkldnn.flags(enabled=onednn):
        fit(ClassifierStep(model, small_train, TrainSpec(model="lenet5_classic", epochs=1, batch_size=200)), seed=1)
    assert len(seen) == 3 and all(s == (onednn and torch.backends.mkldnn.is_available()) for s in seen)


def test_augment_param_validates_and_changes_training(small_train):
    with pytest.raises(ValueError, match=r"augment[\s\S]*'none' or 'crop_flip'"):
        TrainSpec(augment="flip")
    spec = SPEC.model_copy(update={"epochs": 1, "augment": "crop_flip"})
    plain, a, b = _fresh(), _fresh(), _fresh()
    fit(ClassifierStep(plain, small_train, SPEC.model_copy(update={"epochs": 1})), seed=1)
    fit(ClassifierStep(a, small_train, spec), seed=1)
    fit(ClassifierStep(b, small_train, spec), seed=1)
    assert all(torch.equal(v, _weights(b)[k]) for k, v in _weights(a).items())  # seeded
    assert not all(torch.equal(v, _weights(plain)[k]) for k, v in _weights(a).items())  # augmented batches differ
