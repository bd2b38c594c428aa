"""Adversary Critic pieces: the critic's architecture and noise, and the losses against direct computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advlib.defenses.critic import class_logit, critic_loss, cycle_loss, gradient_penalty
from advlib.models import count_parameters, create_model


def test_critic_architecture_and_noise_at_test_time():
    critic = create_model("critic_mlp")
    assert count_parameters(critic) == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10
    critic.eval()
    x = torch.rand(4, 1, 28, 28)
    assert critic(x).shape == (4, 10)
    assert not torch.equal(critic(x), critic(x))  # Gaussian noise stays on in eval mode, as in the paper


def test_gradient_penalty_matches_a_per_sample_autograd_computation():
    torch.manual_seed(0)
    critic = create_model("critic_mlp", input_sigma=0.0, hidden_sigma=0.0)
    x_data, x_adv = torch.rand(5, 1, 28, 28), torch.rand(5, 1, 28, 28)
    y_data, y_adv = torch.randint(0, 10, (5,)), torch.randint(0, 10, (5,))
    want = 0.0
    for x, y in ((x_adv, y_adv), (x_data, y_data)):
        norms = []
        for i in range(5):
            xi = x[i : i + 1].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(critic(xi)[0, y[i]], xi)
            norms.append(g.norm())
        want += torch.stack([(n - 1) ** 2 for n in norms]).mean()
    got = gradient_penalty(critic, x_data, y_data, x_adv, y_adv)
    torch.testing.assert_close(got, 10 * want)
    got.backward()  # differentiable for the critic's update (the output bias does not change input gradients)
    assert all(p.grad is not None for name, p in critic.named_parameters() if name.endswith("weight"))


def test_critic_loss_and_cycle_loss_by_hand():
    torch.manual_seed(1)
    critic = create_model("critic_mlp", input_sigma=0.0, hidden_sigma=0.0)
    x_data, x_adv = torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    y_data, y_adv = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    real, fake = class_logit(critic, x_data, y_data), class_logit(critic, x_adv, y_adv)
    bce = -(torch.log(torch.sigmoid(real)).mean() + torch.log(1 - torch.sigmoid(fake)).mean())
    want = bce + gradient_penalty(critic, x_data, y_data, x_adv, y_adv)
    torch.testing.assert_close(critic_loss(critic, x_data, y_data, x_adv, y_adv), want)
    back = x_data + 0.1
    torch.testing.assert_close(cycle_loss(x_data, back), torch.tensor(784 * 0.01))
    torch.testing.assert_close(F.mse_loss(back, x_data, reduction="sum") / 3, cycle_loss(x_data, back))


def test_classifier_step_loss_reaches_the_classifier_through_the_attack(mnist_model, mnist_test):
    import copy

    from advlib.defenses.critic import ClassConfidence, classifier_step_loss

    classifier = copy.deepcopy(mnist_model).train()
    critic = create_model("critic_mlp")
    x, y = mnist_test[0][:16], mnist_test[1][:16]
    loss, stats, (x_adv, target) = classifier_step_loss(classifier, critic, x, y, ClassConfidence(10), weight=0.1)
    assert stats["reached"] > 0.5 and {"nll", "gan", "cycle"} <= set(stats)
    assert len(x_adv) == round(stats["reached"] * 16) and not x_adv.requires_grad
    assert bool((classifier(x_adv).argmax(1) == target).all())  # the critic is handed only adversarials that reached
    classifier.zero_grad(set_to_none=True)
    (loss - F.cross_entropy(classifier(x), y)).backward()  # only the critic and cycle terms
    assert sum(float(p.grad.abs().sum()) for p in classifier.parameters() if p.grad is not None) > 0


def test_virtual_adversarial_loss_is_zero_for_a_constant_model_and_positive_otherwise(mnist_model, mnist_test):
    from advlib.defenses.baselines import virtual_adversarial_loss

    x = mnist_test[0][:16]
    constant = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with torch.no_grad():
        constant[1].weight.zero_()
    torch.manual_seed(0)
    assert float(virtual_adversarial_loss(constant, x).detach()) < 1e-6
    torch.manual_seed(0)
    loss = virtual_adversarial_loss(mnist_model, x, eps=2.0).detach()
    torch.manual_seed(0)
    random_direction = virtual_adversarial_loss(mnist_model, x, eps=2.0, iterations=0).detach()
    assert float(loss) > float(random_direction) > 0  # the power iteration finds a more damaging direction


def test_critic_defense_trains_both_networks(mnist_test):
    from advlib.defenses.critic import CriticStep
    from advlib.train import fit

    torch.manual_seed(0)
    classifier, critic = create_model("lenet5"), create_model("critic_mlp")
    data = torch.utils.data.TensorDataset(mnist_test[0][:64], mnist_test[1][:64])
    before = [p.detach().clone() for p in critic.parameters()]
    step = CriticStep(classifier, critic, data, epochs=2, weight=0.1, batch_size=32)
    history = fit(step)
    assert [h["epoch"] for h in history] == [0, 1, 2]  # the pre-training epoch, then two regularised ones
    assert "gan" not in history[0] and all({"nll", "reached", "critic"} <= set(h) for h in history[1:])
    assert any(not torch.equal(a, b) for a, b in zip(before, critic.parameters()))
    assert not classifier.training and len(step.confidence.values) == 10
    assert step.scheduler.last_epoch == 2  # the learning-rate schedule counts the regularised epochs only


def test_critic_defense_resumes_to_the_same_weights(mnist_test, tmp_path):
    from advlib.defenses.critic import CriticStep
    from advlib.train import fit

    data = torch.utils.data.TensorDataset(mnist_test[0][:48], mnist_test[1][:48])

    def run(epochs, checkpoint_dir=None):
        torch.manual_seed(0)
        classifier, critic = create_model("mlp1200", width=64), create_model("critic_mlp", width=64)
        step = CriticStep(classifier, critic, data, epochs=epochs, weight=0.5, batch_size=16, halve_every=1)
        history = fit(step, checkpoint_dir=checkpoint_dir)
        return classifier, critic, step, history

    whole = run(2)
    run(1, tmp_path)  # stopped after one regularised epoch ...
    resumed = run(2, tmp_path)  # ... and continued from its checkpoint
    for a, b in zip(
        list(whole[0].parameters()) + list(whole[1].parameters()),
        list(resumed[0].parameters()) + list(resumed[1].parameters()),
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert whole[2].confidence.values.tolist() == resumed[2].confidence.values.tolist()
    assert whole[3] == resumed[3]  # the history, the checkpointed epochs' records included
    assert whole[2].optimizer.param_groups[0]["lr"] == resumed[2].optimizer.param_groups[0]["lr"] == 5e-4 / 4
    with pytest.raises(ValueError, match="epochs=0"):
        CriticStep(whole[0], whole[1], data, epochs=0, weight=0.5)


def test_vat_training_makes_the_model_smoother(mnist_test):
    from advlib.data import load_dataset
    from advlib.defenses.baselines import vat_regularizer, virtual_adversarial_loss
    from advlib.params import TrainSpec
    from advlib.train import ClassifierStep, fit

    train = torch.utils.data.Subset(load_dataset("mnist5k", "train"), range(600))
    spec = TrainSpec(model="lenet5", epochs=2, batch_size=50)
    models = {}
    for name, regularizer in (("plain", None), ("vat", vat_regularizer(eps=2.0))):
        torch.manual_seed(0)
        models[name] = create_model("lenet5")
        fit(ClassifierStep(models[name], train, spec, regularizer=regularizer), seed=0)
    x = mnist_test[0][:100]
    smoothness = {}
    for name, model in models.items():
        torch.manual_seed(1)
        smoothness[name] = float(virtual_adversarial_loss(model.eval(), x, eps=2.0).detach())
    assert smoothness["vat"] < smoothness["plain"]
    with pytest.raises(ValueError, match="eps=0"):
        vat_regularizer(eps=0)


def test_class_confidence_is_keyed_by_the_predicted_class():
    from advlib.defenses.critic import ClassConfidence

    running = ClassConfidence(3, decay=0.5, initial=0.5)
    # true labels would be (0, 0, 1); the predictions are (0, 1, 1): the EMA follows the predictions and their top
    # probability, and class 2, predicted by nobody, keeps its value
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1]])
    running.update(probs)
    torch.testing.assert_close(running.values, torch.tensor([0.25 + 0.45, 0.25 + 0.5 * 0.7, 0.5]))


def test_classifier_step_follows_the_authors_attack_protocol(mnist_model, mnist_test, monkeypatch):
    import copy

    from advlib.attacks import confidence as confidence_module
    from advlib.defenses.critic import ClassConfidence, classifier_step_loss

    real, calls = confidence_module.confidence_attack, []

    def recording(model, x, target, confidence, **kw):
        out = real(model, x, target, confidence, **kw)
        calls.append((x, target, torch.as_tensor(confidence), out))
        return out

    monkeypatch.setattr(confidence_module, "confidence_attack", recording)
    classifier = copy.deepcopy(mnist_model).train()
    x, y = mnist_test[0][:16], mnist_test[1][:16]
    running = ClassConfidence(10)
    critic = create_model("critic_mlp")
    _, stats, (x_adv, adv_class) = classifier_step_loss(classifier, critic, x, y, running, weight=0.1)
    (_, target, c, first), (start, back_to, back_c, _) = calls
    with torch.no_grad():
        own, predicted = classifier(x).softmax(1).max(1)
        fooled = classifier(first).argmax(1) != predicted
    assert bool((target != predicted).all())  # the closest class other than the prediction
    torch.testing.assert_close(c, running.of(target))  # the running confidence of each target class
    assert 0 < int(fooled.sum()) == len(x_adv) == round(stats["reached"] * 16)  # adversarials that changed the label
    assert torch.equal(adv_class, classifier(x_adv).argmax(1))  # the critic sees them at their predicted class
    assert start.grad_fn is None and not start.requires_grad  # the cycle attack starts from detached adversarials
    torch.testing.assert_close(start, first.detach()[fooled])
    assert torch.equal(back_to, predicted[fooled])  # back to the original prediction ...
    torch.testing.assert_close(back_c.detach(), own[fooled].clamp(1e-4, 1 - 1e-4))  # ... with the original confidence
