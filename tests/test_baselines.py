"""The Adversary Critic's baselines: multiclass hinge, margin sensitivity (analytic on a linear model), training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlib.defenses.baselines import margin_regularizer, margin_sensitivity, multiclass_hinge


def test_multiclass_hinge_by_hand():
    logits = torch.tensor([[3.0, 1.0, 2.5], [0.0, 2.0, 0.5], [1.0, 1.0, 1.0]])
    y = torch.tensor([0, 2, 1])
    # max(0, 1 + max_other - true): 1 + 2.5 - 3 = 0.5; 1 + 2 - 0.5 = 2.5; 1 + 1 - 1 = 1
    assert float(multiclass_hinge(logits, y)) == pytest.approx((0.5 + 2.5 + 1.0) / 3)
    assert float(multiclass_hinge(torch.tensor([[5.0, 0.0]]), torch.tensor([0]))) == 0.0


def test_margin_sensitivity_on_a_linear_model_is_the_weight_difference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    x, y = torch.rand(5, 1, 3, 4), torch.tensor([0, 1, 2, 3, 0])
    w = model[1].weight.detach()
    expected = []
    for label in y.tolist():
        gaps = ((w - w[label]) ** 2).sum(1)  # ||W_k - W_y||^2 for every k
        expected.append(float(gaps.max()))  # the class whose gradient differs most
    torch.testing.assert_close(margin_sensitivity(model, x, y).detach(), torch.tensor(expected))


def test_margin_regularizer_reaches_the_parameters_and_checks_its_weight(mnist_model, mnist_test):
    import copy

    model = copy.deepcopy(mnist_model)
    x, y = mnist_test[0][:8], mnist_test[1][:8]
    loss = margin_regularizer(0.1)(model, x, y)
    assert float(loss.detach()) > 0
    loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0
    with pytest.raises(ValueError, match="weight=-1"):
        margin_regularizer(-1)


def test_margin_training_lowers_the_sensitivity():
    from advlib.data import load_dataset
    from advlib.models import create_model
    from advlib.params import TrainSpec
    from advlib.train import ClassifierStep, fit

    train = torch.utils.data.Subset(load_dataset("mnist5k", "train"), range(400))
    spec = TrainSpec(model="mlp1200", model_options={"width": 128}, epochs=2, batch_size=50)
    x, y = load_dataset("mnist5k", "test").tensors
    sensitivity = {}
    for name, kwargs in (
        ("plain", {}),
        ("margin", {"regularizer": margin_regularizer(0.1), "criterion": multiclass_hinge}),
    ):
        torch.manual_seed(0)
        model = create_model("mlp1200", width=128)
        fit(ClassifierStep(model, train, spec, **kwargs), seed=0)
        sensitivity[name] = float(margin_sensitivity(model, x[:200], y[:200]).mean())
    assert sensitivity["margin"] < 0.5 * sensitivity["plain"]
