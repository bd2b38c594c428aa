"""REGroup: PMFs, KL, Borda count and layer choice against hand computations; accuracy on mnist5k."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlib.data import load_dataset, to_tensors
from advlib.defenses.regroup import (
    PreactivationRecorder,
    RegroupClassifier,
    RegroupStatistics,
    borda,
    choose_k,
    fit_regroup,
    kl_to_classes,
    layer_pmfs,
    topk_accuracy,
)


def _loop_pmfs(preacts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1 written with plain Python loops over samples, units and positions."""
    values = preacts.double().flatten(2) if preacts.dim() == 4 else preacts.double().unsqueeze(2)
    pos = torch.zeros(values.shape[:2], dtype=torch.float64)
    neg = torch.zeros(values.shape[:2], dtype=torch.float64)
    for n in range(values.shape[0]):
        for c in range(values.shape[1]):
            for v in values[n, c].tolist():
                if v > 0:
                    pos[n, c] += v
                else:
                    neg[n, c] += -v
    pos, neg = pos + 1e-20, neg + 1e-20
    return pos / pos.sum(1, keepdim=True), neg / neg.sum(1, keepdim=True)


@pytest.mark.parametrize("shape", [(3, 5, 4, 6), (4, 7)], ids=["conv", "linear"])
def test_layer_pmfs_match_loop(shape):
    preacts = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    pos, neg = layer_pmfs(preacts)
    want_pos, want_neg = _loop_pmfs(preacts)
    assert pos.shape == neg.shape == shape[:2]
    torch.testing.assert_close(pos.sum(1), torch.ones(shape[0]))
    torch.testing.assert_close(neg.sum(1), torch.ones(shape[0]))
    torch.testing.assert_close(pos.double(), want_pos, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(neg.double(), want_neg, rtol=1e-5, atol=1e-7)


def test_layer_pmfs_all_zero_is_uniform_and_bad_shape_raises():
    pos, neg = layer_pmfs(torch.zeros(2, 4))
    torch.testing.assert_close(pos, torch.full((2, 4), 0.25))
    torch.testing.assert_close(neg, torch.full((2, 4), 0.25))
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        layer_pmfs(torch.zeros(2, 3, 4))


def test_kl_to_classes_matches_per_class_loop():
    gen = torch.Generator().manual_seed(1)
    classes = torch.rand(4, 6, generator=gen).double()
    classes /= classes.sum(1, keepdim=True)
    samples = torch.rand(5, 6, generator=gen).double()
    samples /= samples.sum(1, keepdim=True)
    want = torch.empty(5, 4, dtype=torch.float64)
    for n in range(5):
        for m in range(4):
            want[n, m] = sum(c * math.log(c / p) for c, p in zip(classes[m].tolist(), samples[n].tolist()))
    torch.testing.assert_close(kl_to_classes(classes, samples), want)
    assert (kl_to_classes(classes, classes).diagonal().abs() < 1e-12).all()


def test_borda_hand_computed():
    # layer 0 ranks classes 1 < 2 < 0 (KL ascending): points 0:0, 1:2, 2:1
    # layer 1 ranks classes 0 < 2 < 1: points 0:2, 1:0, 2:1
    scores = torch.tensor([[[0.9, 0.1, 0.5], [0.2, 3.0, 1.0]]])
    assert borda(scores).tolist() == [[2, 2, 2]]
    scores = torch.tensor([[[0.9, 0.1, 0.5], [0.2, 0.1, 1.0]]])  # layer 1: 1 < 0 < 2 -> 0:1, 1:2, 2:0
    assert borda(scores).tolist() == [[1, 4, 1]]


def test_topk_accuracy():
    scores = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0]])
    y = torch.tensor([1, 2])
    assert topk_accuracy(scores, y, 1) == 0.0
    assert topk_accuracy(scores, y, 2) == 1.0
    with pytest.raises(ValueError, match="k=4"):
        topk_accuracy(scores, y, 4)


@pytest.mark.parametrize(
    "accuracy, expected",
    [([0.3, 0.5, 0.8, 0.9], 2), ([0.9, 0.2, 0.95], 1), ([0.9, 0.95, 0.5], 1), ([0.8, 0.8, 0.8], 3)],
)
def test_choose_k(accuracy, expected):
    assert choose_k(accuracy) == expected


def test_choose_k_threshold_and_empty():
    assert choose_k([0.3, 0.5, 0.8, 0.9], threshold=0.4) == 3
    with pytest.raises(ValueError, match="threshold=1.5"):
        choose_k([0.9], threshold=1.5)
    with pytest.raises(ValueError, match="empty"):
        choose_k([])


def _small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(3 * 6 * 6, 5), nn.ReLU(inplace=True),
        nn.Linear(5, 4),
    )


def test_recorder_captures_preactivations_and_removes_hooks():
    torch.manual_seed(0)
    net = _small_net()
    x = torch.randn(2, 1, 8, 8)
    with PreactivationRecorder(net) as recorder:
        assert recorder.layer_names == ["0", "3", "5"]
        preacts = recorder(x)
        assert [tuple(p.shape) for p in preacts] == [(2, 3, 6, 6), (2, 5), (2, 4)]
        # captured before the in-place ReLU: negative values survive
        assert (preacts[0] < 0).any() and (preacts[1] < 0).any()
        torch.testing.assert_close(preacts[0], net[0](x))
        torch.testing.assert_close(preacts[2], net(x))
    assert all(not m._forward_hooks for m in net.modules())
    net(x)
    assert recorder._captured == {}
    with PreactivationRecorder(net, layers=["5", "0"]) as recorder:
        assert recorder.layer_names == ["0", "5"]
    with pytest.raises(ValueError, match=r"conv9.*available.*'0', '3', '5'"):
        PreactivationRecorder(net, layers=["conv9"])


@pytest.fixture(scope="module")
def regroup_setup(mnist_model):
    x_train, y_train = to_tensors(load_dataset("mnist5k", "train"))
    stats = fit_regroup(mnist_model, x_train, y_train, per_class=50)
    x_test, y_test = to_tensors(load_dataset("mnist5k", "test"), n=600)
    return mnist_model, stats, (x_test[:300], y_test[:300]), (x_test[300:], y_test[300:])


def test_fit_regroup_statistics(regroup_setup):
    _, stats, _, _ = regroup_setup
    assert stats.layer_names == ["features.0", "features.3", "classifier.0", "classifier.2", "classifier.4"]
    assert stats.counts.tolist() == [50] * 10
    widths = [6, 16, 120, 84, 10]
    for pos, neg, width in zip(stats.pos, stats.neg, widths):
        assert pos.shape == neg.shape == (10, width)
        torch.testing.assert_close(pos.sum(1), torch.ones(10))
        torch.testing.assert_close(neg.sum(1), torch.ones(10))


def test_regroup_accuracy_close_to_softmax(regroup_setup):
    # Measured on this 2-epoch LeNet-5 (softmax 89%): per-layer accuracies about [.38, .58, .83, .82, .68], so
    # the 75% rule gives k=1 (REGroup 66%); k=2..5 give 74-79%. A 5-point gap to softmax does not hold here.
    model, stats, (x, y), (x_held, y_held) = regroup_setup
    with torch.no_grad():
        held_correct = model(x_held).argmax(1) == y_held
        softmax_acc = (model(x).argmax(1) == y).float().mean().item()
    per_layer = RegroupClassifier(model, stats).per_layer_predictions(x_held[held_correct])
    assert per_layer.shape == (int(held_correct.sum()), 5)
    accuracy = (per_layer == y_held[held_correct].unsqueeze(1)).float().mean(0).tolist()
    assert max(accuracy) > 0.75 and min(accuracy) > 0.2  # every layer alone beats chance (10%)
    k = choose_k(accuracy)
    classifier = RegroupClassifier(model, stats, k=k)
    scores = classifier.scores(x)
    top1, top5 = topk_accuracy(scores, y, 1), topk_accuracy(scores, y, 5)
    assert top1 > 0.6 and softmax_acc - top1 < 0.3, (k, accuracy, top1, softmax_acc)
    assert top5 >= top1 and top5 > 0.9
    aggregated = topk_accuracy(RegroupClassifier(model, stats, k=3).scores(x), y, 1)
    assert softmax_acc - aggregated < 0.15, (aggregated, softmax_acc)
    assert torch.equal(classifier.predict(x), scores.argmax(1))
    assert classifier.predict(x[:4], topk=3).shape == (4, 3)


def test_statistics_round_trip_gives_identical_scores(regroup_setup):
    model, stats, (x, _), _ = regroup_setup
    tensors = stats.to_tensors()
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    restored = RegroupStatistics.from_tensors({k: v.clone() for k, v in tensors.items()}, stats.layer_names)
    x = x[:50]
    for voters in ("pos", "neg", "pos+neg"):
        want = RegroupClassifier(model, stats, k=3, voters=voters).scores(x)
        assert torch.equal(RegroupClassifier(model, restored, k=3, voters=voters).scores(x), want)
    with pytest.raises(ValueError, match="pos.0"):
        RegroupStatistics.from_tensors({"counts": tensors["counts"]}, stats.layer_names)


def test_bad_inputs_raise(regroup_setup):
    model, stats, (x, y), _ = regroup_setup
    with pytest.raises(ValueError, match="k=0"):
        RegroupClassifier(model, stats, k=0)
    with pytest.raises(ValueError, match=r"number of layers 5.*k=6"):
        RegroupClassifier(model, stats, k=6)
    with pytest.raises(ValueError, match=r"'both'.*pos, neg, pos\+neg"):
        RegroupClassifier(model, stats, voters="both")
    with pytest.raises(ValueError, match=r"'fc9'.*features\.0"):
        fit_regroup(model, x, y, layers=["fc9"])
    with pytest.raises(ValueError, match=r"'mean'.*softmax, equal"):
        fit_regroup(model, x, y, weights="mean")
    with pytest.raises(ValueError, match="per_class=0"):
        fit_regroup(model, x, y, per_class=0)
