"""Native SPSA: its gradient estimate points along the true gradient, the early stop keeps each sample's first
misclassified iterate, keyed draws make a sample's adversarial independent of its batch, bad options are named."""

from __future__ import annotations

import pytest
import torch

from advlib.attacks import create_attack, run_attack
from advlib.attacks.spsa import SPSA, margin_loss


class _Linear(torch.nn.Module):
    """Fixed linear logits in float64: the margin loss is linear wherever the runner-up class does not change."""

    def __init__(self, d: int, classes: int = 3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w = torch.randn(classes, d, generator=g, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).to(torch.float64) @ self.w.T


def test_gradient_estimate_points_along_the_margins_gradient():
    model = _Linear(16)
    x = torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64)
    logits = model(x)
    y = logits.argmax(1)
    runner_up = logits.masked_fill(torch.nn.functional.one_hot(y, 3).bool(), float("-inf")).argmax(1)
    true = (model.w[y] - model.w[runner_up]).view_as(x)  # d(z_y - z_runner_up)/dx
    estimate = SPSA(0.1, nb_sample=4000, max_batch_size=1000, delta=1e-3).gradient(model, x, y, None)
    cosine = torch.nn.functional.cosine_similarity(estimate.flatten(), true.flatten(), dim=0)
    assert cosine > 0.97


class _SumModel(torch.nn.Module):
    """Two logits (0, sum(x) - 0.9): class 1 once the coordinates sum above 0.9."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1).sum(1) - 0.9
        return torch.stack([torch.zeros_like(z), z], dim=1)


def test_early_stop_keeps_each_samples_first_misclassified_iterate():
    model = _SumModel()
    x = torch.tensor([[0.1, 0.1, 0.1, 0.1], [0.3, 0.3, 0.3, 0.3]]).view(2, 1, 2, 2)  # class 0, and already class 1
    y = torch.zeros(2, dtype=torch.long)
    stopped = run_attack(
        {"name": "spsa", "eps": 0.3, "steps": 50, "options": {"lr": 0.02, "early_stop_loss_thresh": 0.0}}, model, x, y
    )
    running = run_attack({"name": "spsa", "eps": 0.3, "steps": 50, "options": {"lr": 0.02}}, model, x, y)
    assert stopped.success.all() and running.success.all()
    assert torch.equal(stopped.x_adv[1], x[1])  # misclassified from the start: never perturbed
    stop_margin = margin_loss(model(stopped.x_adv), y, targeted=False)
    run_margin = margin_loss(model(running.x_adv), y, targeted=False)
    # Adam moves each coordinate by about lr per step: the first misclassified iterate lies within one step of the
    # boundary, where running on drives the margin to the eps-ball's corner (sum 0.4 + 4 * 0.3 = 1.6)
    assert -4 * 0.02 * 1.01 <= float(stop_margin[0]) < 0
    assert float(run_margin[0]) == pytest.approx(-(1.6 - 0.9), abs=1e-6)
    assert float(run_margin[0]) < float(stop_margin[0])


def test_keyed_draws_make_a_samples_adversarial_independent_of_its_batch(mnist_model, mnist_test):
    x, y = mnist_test[0][:6], mnist_test[1][:6]
    spec = {"name": "spsa", "eps": 0.2, "steps": 3, "options": {"nb_sample": 8, "lr": 0.05}}
    keys = torch.arange(6)
    spsa = create_attack(spec)
    together = spsa(mnist_model, x, y, keys=keys).x_adv
    alone = torch.cat([spsa(mnist_model, x[i : i + 1], y[i : i + 1], keys=keys[i : i + 1]).x_adv for i in (4, 1)])
    assert torch.allclose(alone, together[[4, 1]], atol=1e-5)
    assert not torch.allclose(together[4], x[4])  # it did move


def test_targeted_spsa_reaches_the_target_and_stays_in_the_ball(mnist_model, mnist_test):
    x, y = mnist_test[0][:8], mnist_test[1][:8]
    target = (y + 1) % 10
    result = run_attack(
        {"name": "spsa", "eps": 0.3, "steps": 30, "targeted": True, "options": {"nb_sample": 32, "lr": 0.05}},
        mnist_model,
        x,
        y,
        target=target,
    )
    assert float(result.success.float().mean()) >= 0.5
    assert float((result.x_adv - x).abs().max()) <= 0.3 + 1e-6 and result.x_adv.min() >= 0 and result.x_adv.max() <= 1


@pytest.mark.parametrize("option, value", [("steps", 0), ("nb_sample", 0), ("lr", 0.0), ("delta", -1.0)])
def test_bad_options_are_named(option, value):
    with pytest.raises(ValueError, match=rf"SPSA {option} must be"):
        SPSA(0.1, **{option: value})
