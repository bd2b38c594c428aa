"""Evaluation: cascade union equals the naive union, curves, per-class tables, rho_adv, transfer, cached attacks."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from advlib.attacks.pgd import pgd
from advlib.cache import Cache
from advlib.evaluate import (
    accuracy,
    accuracy_vs_eps,
    accuracy_vs_steps,
    attack,
    attack_suite,
    per_class_attack_table,
    rho_adv,
    transfer_matrix,
    union_robustness,
)

# deterministic attacks (no random start), so cascade and naive runs see identical perturbations per sample
DETERMINISTIC = [
    {"name": "fgsm", "eps": 0.1},
    {"name": "deepfool_l2", "eps": 1.0, "options": {"steps": 20}},
    {"name": "pgd_linf", "eps": 0.1, "steps": 5, "random_start": False},
    {"name": "pgd_l2", "eps": 1.5, "steps": 5, "random_start": False},
]


def test_cascade_union_equals_naive_union(mnist_model, mnist_test):
    x, y = mnist_test
    cascade = union_robustness(mnist_model, x, y, DETERMINISTIC, cascade=True)
    naive = union_robustness(mnist_model, x, y, DETERMINISTIC, cascade=False)
    assert torch.equal(cascade.robust, naive.robust)
    assert cascade.robust_accuracy == naive.robust_accuracy
    suite = attack_suite(mnist_model, x, y, DETERMINISTIC)
    worst = torch.stack(list(suite.robust().values())).all(dim=0)  # per-sample worst case over attacks
    assert torch.equal(naive.robust, worst)
    assert cascade.robust_accuracy <= min(float(m.float().mean()) for m in suite.robust().values())


# random starts, L1 step sizes drawn per step, and two attacks whose noise serves the whole batch
STOCHASTIC = [
    {"name": "fgsm", "eps": 0.1},
    {"name": "pgd_linf", "eps": 0.1, "steps": 5},
    {"name": "pgd_l1", "eps": 8.0, "steps": 5},
    {"name": "pgd_l2", "eps": 1.0, "steps": 5, "options": {"start_sigma": 0.3}},
    {"name": "salt_and_pepper", "eps": 3.0, "options": {"steps": 20}},
    {"name": "uniform_noise", "eps": 2.0},
]


def test_cascade_union_equals_naive_union_with_random_attacks(mnist_model, mnist_test):
    x, y = mnist_test
    cascade = union_robustness(mnist_model, x, y, STOCHASTIC, cascade=True)
    naive = union_robustness(mnist_model, x, y, STOCHASTIC, cascade=False)
    alive = naive.clean_correct.clone()
    for label, broken in naive.broken.items():  # each attack breaks the same survivors in both modes
        assert torch.equal(cascade.broken[label] & alive, broken & alive), label
        alive &= ~broken
    assert torch.equal(cascade.robust, naive.robust)
    assert 0 < naive.robust_accuracy < float(naive.clean_correct.float().mean())  # the attacks do break samples


def test_batch_attacks_run_on_the_survivors_only_when_asked(mnist_model, mnist_test, monkeypatch):
    """A cascade runs an attack whose draws serve the whole batch (salt & pepper) on every sample unless
    batch_attacks_on_survivors is set; then it sees only the survivors of the earlier attacks and breaks none else."""
    import advlib.evaluate as evaluate

    x, y = mnist_test
    specs = {"PGD": {"name": "pgd_linf", "eps": 0.1, "steps": 5}, "S&P": {"name": "salt_and_pepper", "eps": 3.0}}
    seen: list[int] = []
    real = evaluate.attack

    def counting(spec, model, x, y, **kw):
        seen.append(len(x))
        return real(spec, model, x, y, **kw)

    monkeypatch.setattr(evaluate, "attack", counting)
    everyone = union_robustness(mnist_model, x, y, specs)
    assert seen[1] == len(x)
    seen.clear()
    survivors = union_robustness(mnist_model, x, y, specs, batch_attacks_on_survivors=True)
    alive = survivors.clean_correct & ~survivors.broken["PGD"]
    assert seen == [int(survivors.clean_correct.sum()), int(alive.sum())] and 0 < seen[1] < len(x)
    assert not (survivors.broken["S&P"] & ~alive).any()
    assert torch.equal(survivors.broken["PGD"], everyone.broken["PGD"])


def test_suite_draws_as_the_union_does_so_the_union_is_below_each_attack(mnist_model, mnist_test):
    """The suite keys each sample's draws by its position, as the union's cascade does: with random starts each
    per-sample attack breaks the same samples in both, so the union is at most every single attack's accuracy."""
    x, y = mnist_test
    union = union_robustness(mnist_model, x, y, STOCHASTIC, cascade=False)
    suite = attack_suite(mnist_model, x, y, STOCHASTIC)
    for label, robust in suite.robust().items():
        assert torch.equal(suite.clean & ~robust, union.broken[label]), label
    assert union.robust_accuracy <= min(float(m.float().mean()) for m in suite.robust().values())


def test_keyed_pgd_result_does_not_depend_on_the_batch(mnist_model, mnist_test):
    """With keys, a sample's random start comes from its own stream: alone, in a subset or in the full batch, and
    whatever ran before, its adversarial is the same; without keys the start depends on the batch."""
    x, y = mnist_test
    x, y = x[:24], y[:24]
    keys = torch.arange(24)
    spec = {"name": "pgd_linf", "eps": 0.1, "steps": 3}
    full = attack(spec, mnist_model, x, y, keys=keys).x_adv
    torch.manual_seed(123)
    subset = torch.tensor([3, 7, 20])
    part = attack(spec, mnist_model, x[subset], y[subset], keys=keys[subset]).x_adv
    assert torch.equal(part, full[subset])
    alone = attack(spec, mnist_model, x[7:8], y[7:8], keys=keys[7:8]).x_adv
    assert torch.equal(alone, full[7:8])
    unkeyed = attack(spec, mnist_model, x[subset], y[subset]).x_adv
    assert not torch.equal(unkeyed, full[subset])
    other_seed = attack({**spec, "seed": 1}, mnist_model, x, y, keys=keys).x_adv
    assert not torch.equal(other_seed, full)


def test_bad_keys_rejected(mnist_model, mnist_test):
    x, y = mnist_test
    with pytest.raises(ValueError, match="keys must be 4 integers"):
        attack({"name": "pgd_linf", "eps": 0.1, "steps": 1}, mnist_model, x[:4], y[:4], keys=torch.zeros(4))
    with pytest.raises(ValueError, match="keys must be 4 integers"):
        attack({"name": "pgd_linf", "eps": 0.1, "steps": 1}, mnist_model, x[:4], y[:4], keys=torch.arange(3))


def test_suite_table_and_per_class(mnist_model, mnist_test):
    x, y = mnist_test
    suite = attack_suite(mnist_model, x, y, DETERMINISTIC[:2])
    table = suite.table()
    assert list(table["attack"]) == ["clean", "fgsm@0.1", "deepfool_l2@1"]
    assert table["accuracy"].iloc[0] == pytest.approx(100 * accuracy(mnist_model, x, y))
    per_class = per_class_attack_table(y, {"clean": suite.clean, **suite.robust()}, 10)
    assert per_class.shape == (10, 3)
    counts = torch.bincount(y, minlength=10).numpy()
    overall = (per_class["clean"].to_numpy() * counts).sum() / counts.sum()
    assert overall == pytest.approx(table["accuracy"].iloc[0])


def test_accuracy_vs_eps_decreases(mnist_model, mnist_test):
    x, y = mnist_test
    curve = accuracy_vs_eps(mnist_model, x, y, {"name": "fgsm", "eps": 0.1}, [0.02, 0.1, 0.3])
    assert list(curve["eps"]) == [0.02, 0.1, 0.3]
    assert curve["accuracy"].is_monotonic_decreasing and curve["accuracy"].iloc[-1] < curve["accuracy"].iloc[0]


def test_accuracy_vs_steps_matches_separate_runs(mnist_model, mnist_test):
    x, y = mnist_test[0][:64], mnist_test[1][:64]
    spec = {"name": "pgd_linf", "eps": 0.1, "stepsize": 0.01}
    spec["seed"] = 7
    curve = accuracy_vs_steps(mnist_model, x, y, spec, 8)
    assert list(curve["steps"]) == list(range(9))
    assert curve["accuracy"].iloc[0] == pytest.approx(100 * accuracy(mnist_model, x, y))
    for steps in (2, 8):
        torch.manual_seed(7)
        x_adv = pgd(mnist_model, x, y, eps=0.1, steps=steps, stepsize=0.01).x_adv
        assert curve["accuracy"].iloc[steps] == pytest.approx(100 * accuracy(mnist_model, x_adv, y))
    with pytest.raises(ValueError, match="native PGD"):
        accuracy_vs_steps(mnist_model, x, y, {"name": "fgsm", "eps": 0.1}, 3)


def test_accuracy_vs_steps_is_cached_per_model_spec_and_samples(mnist_model, mnist_test, tmp_path, caplog):
    x, y = mnist_test[0][:32], mnist_test[1][:32]
    spec = {"name": "pgd_linf", "eps": 0.1, "stepsize": 0.01}
    live = accuracy_vs_steps(mnist_model, x, y, spec, 4)
    built = accuracy_vs_steps(mnist_model, x, y, spec, 4, model_key="m1", cache=Cache(tmp_path))
    with caplog.at_level(logging.INFO, logger="advlib"):
        loaded = accuracy_vs_steps(mnist_model, x, y, spec, 4, model_key="m1", cache=Cache(tmp_path))
    assert "loaded accuracy vs steps" in caplog.text
    pd.testing.assert_frame_equal(built, live, check_exact=True)
    pd.testing.assert_frame_equal(loaded, live, check_exact=True)
    accuracy_vs_steps(mnist_model, x[:16], y[:16], spec, 4, model_key="m1", cache=Cache(tmp_path))
    assert len(list((tmp_path / "steps_curve").glob("*/meta.json"))) == 2  # other samples, another entry


def test_rho_adv_on_linear_model_is_distance_to_boundary():
    # f(x) = [0, w.x + b]: the L2 distance of x to the boundary is |w.x + b| / ||w||; DeepFool finds it exactly
    torch.manual_seed(0)
    w = torch.randn(16) * 0.5
    linear = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        linear[1].weight.copy_(torch.stack([torch.zeros(16), w]))
        linear[1].bias.copy_(torch.tensor([0.0, -0.3]))
    x = torch.rand(32, 1, 4, 4) * 0.2 + 0.4
    y = linear(x).argmax(1)
    result = attack({"name": "deepfool_l2", "options": {"overshoot": 0.0, "steps": 50}}, linear, x, y)
    distance = (x.flatten(1) @ w - 0.3).abs() / w.norm()
    expected = float((distance / x.flatten(1).norm(dim=1)).mean())
    assert rho_adv(x, result.x_adv) == pytest.approx(expected, rel=1e-3)
    assert rho_adv(x, x) == 0.0


def test_transfer_matrix_diagonal_is_white_box(mnist_model, mnist_test):
    x, y = mnist_test[0][:64], mnist_test[1][:64]
    torch.manual_seed(1)
    other = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    spec = {"name": "fgsm", "eps": 0.15}
    matrix = transfer_matrix({"lenet": mnist_model, "linear": other}, x, y, spec)
    assert matrix.shape == (2, 2) and list(matrix.index) == ["lenet", "linear"]
    white_box = attack(spec, mnist_model, x, y)
    assert matrix.loc["lenet", "lenet"] == pytest.approx(100 * accuracy(mnist_model, white_box.x_adv, y))


def test_cached_attack_is_reloaded(mnist_model, mnist_test, tmp_path, caplog):
    x, y = mnist_test[0][:32], mnist_test[1][:32]
    spec = {"name": "pgd_linf", "eps": 0.1, "steps": 5}
    first = attack(spec, mnist_model, x, y, model_key="m1", cache=Cache(tmp_path))
    with caplog.at_level(logging.INFO, logger="advlib"):
        second = attack(spec, mnist_model, x, y, model_key="m1", cache=Cache(tmp_path))
    assert "loaded adversarials pgd_linf@0.1" in caplog.text
    assert torch.equal(first.x_adv, second.x_adv) and torch.equal(first.success, second.success)
    assert np.isclose(float(first.norms.max()), float(second.norms.max()))


def test_suites_keep_specs_with_one_name_and_eps_apart_by_their_keys(mnist_model, mnist_test):
    from advlib import params
    from advlib.params import ParamsError

    x, y = mnist_test[0][:40], mnist_test[1][:40]
    weak = {"name": "pgd_linf", "eps": 0.15, "steps": 1, "random_start": False}
    strong = {**weak, "steps": 20}
    suite = attack_suite(mnist_model, x, y, {"PGD-1": weak, "PGD-20": strong})
    table = suite.table().set_index("attack")
    assert list(table.index) == ["clean", "PGD-1", "PGD-20"]
    assert table.loc["PGD-20", "accuracy"] < table.loc["PGD-1", "accuracy"]  # both ran: more steps, lower accuracy
    union = union_robustness(mnist_model, x, y, {"PGD-1": weak, "PGD-20": strong})
    assert set(union.broken) == {"PGD-1", "PGD-20"}
    with pytest.raises(ValueError, match=r"\['pgd_linf@0.15'\] appear more than once.*mapping"):
        attack_suite(mnist_model, x, y, [weak, strong])
    with pytest.raises(ParamsError, match="appear more than once"):
        params.load("quickstart", "ci", ["attacks.0={name: pgd_linf, eps: 0.2, steps: 3}"])


@pytest.mark.parametrize("name", ["fgsm", "confidence_l2"])
def test_accuracy_vs_steps_refuses_attacks_that_do_not_record_iterates(name, mnist_model, mnist_test):
    x, y = mnist_test[0][:4], mnist_test[1][:4]
    with pytest.raises(ValueError, match=rf"needs a native PGD attack .*got '{name}'"):
        accuracy_vs_steps(mnist_model, x, y, {"name": name, "eps": 1.0}, 3)
