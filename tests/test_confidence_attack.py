"""The Adversary Critic attack (eq. 7): reaches the target with the requested confidence; differentiable to second
order; the closest target and the stopping mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advlib.attacks import run_attack
from advlib.attacks.confidence import closest_target, confidence_attack


def test_reaches_the_target_with_the_requested_confidence(mnist_model, mnist_test):
    x, y = mnist_test[0][:64], mnist_test[1][:64]
    with torch.no_grad():
        correct = mnist_model(x).argmax(1) == y
    x, y = x[correct], y[correct]
    target = closest_target(mnist_model, x, exclude=y)
    assert bool((target != y).all())
    x_adv = confidence_attack(mnist_model, x, target, 0.9, steps=500, step_clip=0.1, overshoot=0.02, box=True)
    with torch.no_grad():
        probs = F.softmax(mnist_model(x_adv), dim=1)
    reached = (probs.argmax(1) == target) & (probs.gather(1, target[:, None]).squeeze(1) >= 0.9)
    assert reached.float().mean() > 0.9
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_registry_attack_succeeds_and_is_minimal_ish(mnist_model, mnist_test):
    x, y = mnist_test[0][:32], mnist_test[1][:32]
    result = run_attack({"name": "confidence_l2"}, mnist_model, x, y)
    deepfool = run_attack({"name": "deepfool_l2"}, mnist_model, x, y)
    assert result.success.float().mean() > 0.9
    both = result.success & deepfool.success
    # high confidence needs a longer step than DeepFool's boundary-crossing one, but of the same order
    assert result.l2[both].median() > deepfool.l2[both].median()
    assert result.l2[both].median() < 5 * deepfool.l2[both].median()


def test_classifier_parameters_get_gradient_through_the_attack(mnist_model, mnist_test):
    x = mnist_test[0][:8]
    with torch.no_grad():
        target = (mnist_model(x).argmax(1) + 1) % 10
    mnist_model.zero_grad(set_to_none=True)
    x_adv = confidence_attack(mnist_model, x, target, 0.9, steps=5, differentiable=True)
    # x_adv depends on the parameters only through the step directions and sizes: second-order gradients
    (x_adv - x).pow(2).sum().backward()
    grads = [p.grad for p in mnist_model.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    mnist_model.zero_grad(set_to_none=True)


def test_samples_already_confident_do_not_move(mnist_model, mnist_test):
    x = mnist_test[0][:16]
    with torch.no_grad():
        pred = mnist_model(x).argmax(1)
    x_adv = confidence_attack(mnist_model, x, pred, 1e-3, steps=5)  # every sample already holds its prediction
    torch.testing.assert_close(x_adv, x)
    with pytest.raises(ValueError, match="confidence must lie in"):
        confidence_attack(mnist_model, x, pred, 1.5)


def _reference_unrolled(model, x, target, confidence, steps, overshoot):
    """The authors' unrolled attack written out with explicit detaches: each step starts from a constant point."""
    r = torch.zeros_like(x)
    mask = torch.ones(len(x), dtype=x.dtype)
    for _ in range(steps):
        point = (x + (1 + overshoot) * r).detach().requires_grad_(True)
        log_p = F.log_softmax(model(point), dim=1)[torch.arange(len(x)), target]
        (w,) = torch.autograd.grad(log_p.sum(), point, create_graph=True)
        w_norm = (1e-8 + w.pow(2).sum(1, keepdim=True)).sqrt()
        f = (log_p - torch.log(torch.as_tensor(confidence, dtype=x.dtype))).abs()[:, None]
        soft = torch.sigmoid(confidence - log_p.exp())
        mask = mask * (torch.round(soft).detach() + soft - soft.detach())
        r = r + mask[:, None] * (1e-4 + f / w_norm) * w / w_norm
    return x + (1 + overshoot) * r


def test_training_gradient_reaches_the_parameters_through_w_and_f_only():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    x = torch.rand(5, 4, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 1, 0])
    got = confidence_attack(model, x, target, 0.9, steps=2, overshoot=0.05, differentiable=True)
    want = _reference_unrolled(model, x, target, 0.9, steps=2, overshoot=0.05)
    torch.testing.assert_close(got, want)
    g_got = torch.autograd.grad((got - x).pow(2).sum(), list(model.parameters()))
    g_want = torch.autograd.grad((want - x).pow(2).sum(), list(model.parameters()))
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b)
    # the point a step starts from carries no gradient: x_adv - x is linear in the steps' (w, f) graphs only
    assert all(float(g.abs().sum()) > 0 for g in g_got)
