"""Tests for the mixture-of-generators defense: exact architectures, identity and faster initialisation,
winner-only updates of Algorithm 1, determinism, generator roles and an end-to-end FGSM defense."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlib.attacks import run_attack
from advlib.data import load_dataset, to_tensors
from advlib.defenses.mixgen import (
    DefenseEvaluation,
    MixtureOfGenerators,
    evaluate_defense,
    faster_init,
    identity_init,
    train_competitive,
)
from advlib.models import count_parameters, create_model


@pytest.fixture(scope="module")
def mnist_train() -> tuple[torch.Tensor, torch.Tensor]:
    return to_tensors(load_dataset("mnist5k", "train"))


@pytest.fixture(scope="module")
def mnist_images(mnist_train: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return mnist_train[0]


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (BatchNorm running statistics included), cloned."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name, expected", [("mixgen_generator", 28_609), ("mixgen_large_generator", 333_697)])
def test_generator_parameter_counts_match_the_paper(name: str, expected: int) -> None:
    generator = create_model(name)
    assert count_parameters(generator) == expected
    with torch.no_grad():
        out = generator.eval()(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 1, 28, 28) and float(out.min()) > 0 and float(out.max()) < 1


def test_discriminator_returns_one_logit_per_image() -> None:
    discriminator = create_model("mixgen_discriminator")
    assert discriminator(torch.rand(5, 1, 28, 28)).shape == (5, 1)
    pools = [m for m in discriminator if isinstance(m, nn.AvgPool2d)]
    assert len(pools) == 3 and discriminator[-3].in_features == 64 * 3 * 3  # 28 -> 14 -> 7 -> 3
    with pytest.raises(ValueError, match="too small"):
        create_model("mixgen_discriminator", input_size=6)


def test_identity_init_learns_a_near_identity_map(mnist_images: torch.Tensor) -> None:
    x = mnist_images[:128]
    torch.manual_seed(0)
    generator = create_model("mixgen_generator").eval()
    with torch.no_grad():
        before = F.mse_loss(generator(x), x).item()
    history = identity_init([generator], x, epochs=2, batch_size=16, lr=3e-3, seed=0)
    assert len(history) == 2 and history[1] < history[0]
    assert not generator.training
    with torch.no_grad():
        after = F.mse_loss(generator(x), x).item()
    assert after < 0.01 and after < before / 10


def test_faster_init_zeroes_a_fraction_of_each_copy() -> None:
    torch.manual_seed(0)
    source = create_model("mixgen_generator")
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01)  # no exact zeros in the source, so every zero below was set by faster_init
    original = torch.cat([p.flatten() for p in source.parameters()])
    copies = faster_init(source, 3, zero_fraction=0.05, seed=1)
    vectors = [torch.cat([p.flatten() for p in c.parameters()]) for c in copies]
    expected = round(0.05 * original.numel())
    for vector in vectors:
        zeroed = vector != original
        assert int(zeroed.sum()) == expected and bool((vector[zeroed] == 0).all())
    assert not torch.equal(vectors[0] == 0, vectors[1] == 0)
    assert torch.equal(torch.cat([p.flatten() for p in source.parameters()]), original)  # source untouched
    with pytest.raises(ValueError, match="zero_fraction"):
        faster_init(source, 2, zero_fraction=1.5)
    with pytest.raises(ValueError, match="n must be"):
        faster_init(source, 0)


def test_only_winners_change_in_a_competitive_step(mnist_images: torch.Tensor) -> None:
    """D scores mean brightness, so G1 (constant zeros) and G2 (a dimmer copy of G0) can never win."""
    torch.manual_seed(0)
    g0 = create_model("mixgen_generator")
    g1 = create_model("mixgen_generator")
    g2 = copy.deepcopy(g0)
    with torch.no_grad():
        g1[-2].weight.zero_()
        g1[-2].bias.fill_(-30.0)
        g2[-2].bias.sub_(2.0)
    discriminator = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 1))
    with torch.no_grad():
        discriminator[1].weight.fill_(1.0 / 28 / 28)
        discriminator[1].bias.zero_()
    mixture = MixtureOfGenerators([g0, g1, g2], discriminator)
    x = mnist_images[:16]
    assert torch.equal(mixture.scores(x).argmax(dim=0), torch.zeros(16, dtype=torch.long))
    before = [_state(g) for g in (g0, g1, g2)] + [_state(discriminator)]
    history = train_competitive(mixture, mnist_images[16:32], x, epochs=1, batch_size=16)
    assert history[0]["wins"] == [16, 0, 0]
    assert np.isnan(history[0]["generator_losses"][1]) and np.isnan(history[0]["generator_losses"][2])
    after = [_state(g) for g in (g0, g1, g2)] + [_state(discriminator)]
    assert _same(before[1], after[1]) and _same(before[2], after[2])  # weights and BN buffers bit-identical
    assert not torch.equal(before[0]["0.weight"], after[0]["0.weight"])
    assert not torch.equal(before[0]["2.running_mean"], after[0]["2.running_mean"])
    assert not _same(before[3], after[3])


def test_competitive_training_is_deterministic_and_updates_the_discriminator(mnist_images: torch.Tensor) -> None:
    def run(seed: int) -> tuple[MixtureOfGenerators, list[dict]]:
        torch.manual_seed(0)
        mixture = MixtureOfGenerators(
            [create_model("mixgen_generator") for _ in range(2)], create_model("mixgen_discriminator")
        )
        initial = _state(mixture.discriminator)
        result = train_competitive(mixture, mnist_images[32:56], mnist_images[:32], epochs=1, batch_size=16, seed=seed)
        assert not _same(initial, _state(mixture.discriminator))
        return mixture, result

    (first, h1), (second, h2), (third, _) = run(0), run(0), run(1)
    assert _same(_state(first), _state(second))
    np.testing.assert_equal(h1, h2)  # NaN-aware: a generator that wins nothing has NaN loss
    assert not _same(_state(first), _state(third))
    record = h1[0]
    assert sum(record["wins"]) == 32 and record["discriminator_loss"] > 0
    with pytest.raises(ValueError, match="epochs"):
        train_competitive(first, mnist_images[:4], mnist_images[:4], epochs=0, batch_size=2)
    with pytest.raises(ValueError, match="differ in shape"):
        train_competitive(first, torch.rand(4, 1, 14, 14), mnist_images[:4], epochs=1, batch_size=2)


class Killed(RuntimeError):
    """The stand-in for a kill: raised from an epoch callback."""


def _two_phase_training(images: torch.Tensor, checkpoints, kill: str | None = None) -> tuple[dict, list, list]:
    """Identity initialisation then competitive training of a 2-generator mixture (2 epochs each), checkpointing
    into `checkpoints`; `kill` ('identity' or 'competitive') raises after that phase's first epoch."""

    def callback(phase: str):
        def on_epoch(epoch: int, model: nn.Module, record: dict) -> None:
            if phase == kill and epoch == 1:
                raise Killed(phase)

        return on_epoch

    torch.manual_seed(0)
    mixture = MixtureOfGenerators(
        [create_model("mixgen_generator") for _ in range(2)], create_model("mixgen_discriminator")
    )
    mse = identity_init(
        mixture.generators,
        images[:24],
        epochs=2,
        batch_size=8,
        seed=3,
        checkpoint_dir=checkpoints / "identity",
        on_epoch=callback("identity"),
    )
    history = train_competitive(
        mixture,
        images[24:40],
        images[:24],
        epochs=2,
        batch_size=8,
        seed=3,
        checkpoint_dir=checkpoints / "competitive",
        on_epoch=callback("competitive"),
    )
    return _state(mixture), mse, history


def test_mixgen_training_resumes_after_a_kill_to_the_same_weights(mnist_images: torch.Tensor, tmp_path) -> None:
    """Killed after the first epoch of each phase in turn and rerun on the same checkpoints, the training reaches the
    weights (BatchNorm buffers included) and history of an uninterrupted run, bit for bit: the batch-order generator,
    the optimizers and the modules are all restored."""
    weights, mse, history = _two_phase_training(mnist_images, tmp_path / "uninterrupted")
    assert len(mse) == 2 and len(history) == 2
    for kill in ("identity", "competitive"):
        with pytest.raises(Killed, match=kill):
            _two_phase_training(mnist_images, tmp_path / "killed", kill=kill)
    assert (tmp_path / "killed" / "competitive" / "checkpoint.safetensors").is_file()
    resumed_weights, resumed_mse, resumed_history = _two_phase_training(mnist_images, tmp_path / "killed")
    assert _same(weights, resumed_weights)
    assert resumed_mse == mse
    np.testing.assert_equal(resumed_history, history)  # NaN-aware


def _roles_example() -> DefenseEvaluation:
    """4 attacks x 100 samples, 4 generators: G0 wins 80 of each of attacks 0-2 at 90% accuracy (generalist);
    G1 wins 80 of attack 3 at 75% (specialist); G2 wins the other 20 of attack 3, all correct, but only 5% of
    all samples (low share, high accuracy: a specialist); G3 wins 20 of each of attacks 0-2 at 30% (15% of all
    samples, above half the fair share 12.5%, covering 3 of 4 attacks: a generalist despite its accuracy)."""
    attack = np.repeat(np.arange(4), 100)
    winner = np.empty(400, dtype=np.int64)
    correct = np.zeros(400, dtype=bool)
    for a in range(3):
        block = slice(100 * a, 100 * a + 100)
        winner[block] = [0] * 80 + [3] * 20
        correct[block] = [True] * 72 + [False] * 8 + [True] * 6 + [False] * 14
    winner[300:] = [1] * 80 + [2] * 20
    correct[300:] = [True] * 60 + [False] * 20 + [True] * 20
    y = np.tile(np.arange(10), 40)
    return DefenseEvaluation(
        y=y,
        attack=attack,
        attack_names=["fgsm", "pgd", "df", "aun"],
        winner=winner,
        correct=correct,
        correct_undefended=np.zeros(400, dtype=bool),
        num_generators=4,
    )


def test_generator_roles_follow_the_stated_rule() -> None:
    roles = _roles_example().generator_roles()
    assert roles["role"].tolist() == ["generalist", "specialist", "specialist", "generalist"]
    assert roles["wins"].tolist() == [240, 80, 20, 60]
    assert roles["attacks_covered"].tolist() == [3, 1, 1, 3]
    np.testing.assert_allclose(roles["accuracy"], [90.0, 75.0, 100.0, 30.0])
    np.testing.assert_allclose(roles["win_share"], [0.6, 0.2, 0.05, 0.15])


def _wins(
    blocks: list[tuple[int, int, int, int]], attacks: int = 4, per_attack: int = 100, generators: int = 6
) -> DefenseEvaluation:
    """An evaluation from (attack, generator, wins, correct) blocks that fill each attack's samples in order."""
    attack = np.repeat(np.arange(attacks), per_attack)
    winner = np.full(attacks * per_attack, -1)
    correct = np.zeros(attacks * per_attack, dtype=bool)
    filled = np.zeros(attacks, dtype=int)
    for a, g, n, right in blocks:
        start = a * per_attack + filled[a]
        winner[start : start + n] = g
        correct[start : start + right] = True
        filled[a] += n
    assert (winner >= 0).all(), "every sample needs a winner"
    return DefenseEvaluation(
        y=np.arange(attacks * per_attack) % 10,
        attack=attack,
        attack_names=[f"a{i}" for i in range(attacks)],
        winner=winner,
        correct=correct,
        correct_undefended=np.zeros(attacks * per_attack, dtype=bool),
        num_generators=generators,
    )


def test_roles_as_the_paper_defines_them() -> None:
    """Sec. 4.6 on a hand-made win/accuracy table (4 attacks x 100 samples, 6 generators: half the fair share is
    400 / 6 / 2 = 33.3 samples). Attack 3 plays the paper's hard attack."""
    evaluation = _wins(
        [(a, 0, 80, 72) for a in range(3)]  # G0: 60% of samples, 3 attacks, 90%: generalist
        + [(3, 1, 60, 18)]  # G1: 15%, hard attack only, 30%: specialist
        + [(3, 2, 20, 20)]  # G2: 5% (low share), hard attack, 100%: specialist
        + [(3, 3, 20, 4)]  # G3: 5% (low share), 20% (low accuracy): marginalist
        + [(a, 4, 20, 5) for a in range(3)]
    )  # G4: 15%, 3 attacks, 25%: generalist by coverage
    roles = evaluation.generator_roles()  # G5 wins nothing: idle, not a marginalist
    assert roles["role"].tolist() == [
        "generalist",
        "specialist",
        "specialist",
        "marginalist",
        "generalist",
        "idle",
    ]
    assert roles["wins"].tolist() == [240, 60, 20, 20, 60, 0]
    np.testing.assert_allclose(roles["accuracy"].iloc[:5], [90.0, 30.0, 100.0, 20.0, 25.0])
    assert np.isnan(roles["accuracy"].iloc[5])
    # the same low share is a marginalist only with low accuracy: 17 of 20 right (85%) makes G3 a specialist
    better = _wins(
        [(a, 0, 80, 72) for a in range(3)]
        + [(3, 1, 60, 18), (3, 2, 20, 20), (3, 3, 20, 17)]
        + [(a, 4, 20, 5) for a in range(3)]
    )
    assert better.generator_roles()["role"].iloc[3] == "specialist"
    # and low accuracy alone is not enough: G3 at 20% accuracy but 35% of the samples is a specialist
    busy = _wins(
        [(a, 0, 80, 72) for a in range(3)] + [(3, 3, 100, 20)] + [(a, 4, 20, 5) for a in range(3)], per_attack=100
    )
    assert busy.generator_roles()["role"].tolist()[3] == "specialist"
    assert evaluation.role_examples() == [0, 1, 3]


def test_defense_evaluation_breakdowns() -> None:
    evaluation = _roles_example()
    assert evaluation.accuracy() == pytest.approx(100 * (3 * 78 + 80) / 400)
    assert evaluation.accuracy_undefended() == 0.0
    assert evaluation.accuracy_by_attack().to_dict() == {"fgsm": 78.0, "pgd": 78.0, "df": 78.0, "aun": 80.0}
    wins = evaluation.class_attack_wins(1)
    assert wins.shape == (10, 4) and int(wins.values.sum()) == 80 and int(wins["aun"].sum()) == 80
    accuracy = evaluation.class_attack_accuracy(1)
    assert accuracy["fgsm"].isna().all() and accuracy["aun"].notna().all()
    assert list(evaluation.class_attack_accuracy().index) == list(range(10))
    with pytest.raises(ValueError, match="generator must be in"):
        evaluation.class_attack_wins(4)
    with pytest.raises(ValueError, match="attack indices"):
        DefenseEvaluation(
            y=[0], attack=[2], attack_names=["fgsm"], winner=[0], correct=[True], correct_undefended=[False]
        )
    with pytest.raises(ValueError, match="same non-zero length"):
        DefenseEvaluation(
            y=[0, 1], attack=[0], attack_names=["fgsm"], winner=[0], correct=[True], correct_undefended=[False]
        )


def test_mixture_defends_lenet_against_fgsm(
    mnist_model: nn.Module,
    mnist_train: tuple[torch.Tensor, torch.Tensor],
    mnist_test: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """Section 4 in miniature: transformed = FGSM(0.3) of 384 training images, canonical = 384 other ones,
    no labels used in training; on 200 test images' FGSM adversarials the defense beats no defense."""
    x_train, y_train = mnist_train
    fgsm = {"name": "fgsm", "eps": 0.3}
    transformed = run_attack(fgsm, mnist_model, x_train[:384], y_train[:384]).x_adv
    canonical = x_train[384:768]
    torch.manual_seed(0)
    mixture = MixtureOfGenerators(
        [create_model("mixgen_generator") for _ in range(2)], create_model("mixgen_discriminator")
    )
    identity_init(mixture.generators, transformed, epochs=2, batch_size=64, seed=0)
    epochs_seen: list[int] = []
    history = train_competitive(
        mixture,
        canonical,
        transformed,
        epochs=2,
        batch_size=64,
        seed=0,
        on_epoch=lambda epoch, model, record: epochs_seen.append(epoch),
    )
    assert epochs_seen == [1, 2] and all(sum(r["wins"]) == 384 for r in history)

    x_test, y_test = mnist_test
    x_adv = run_attack(fgsm, mnist_model, x_test, y_test).x_adv
    evaluation = evaluate_defense(mixture, mnist_model, {"fgsm": (x_adv, y_test)}, batch_size=128)
    assert len(evaluation.y) == 200 and evaluation.num_classes == 10
    defended, winner = mixture.defend(x_adv[:8])
    assert defended.shape == (8, 1, 28, 28) and winner.tolist() == evaluation.winner[:8].tolist()
    assert evaluation.accuracy() > evaluation.accuracy_undefended() + 5


def test_expertise_tables_and_role_examples():
    from advlib.defenses.mixgen import DefenseEvaluation

    # generator 0 wins everything on both attacks and is right: a generalist; generator 1 never wins: idle
    n = 40
    evaluation = DefenseEvaluation(
        y=np.arange(n) % 10,
        attack=np.arange(n) // 20,
        attack_names=["A", "B"],
        winner=np.zeros(n),
        correct=np.ones(n, bool),
        correct_undefended=np.zeros(n, bool),
        num_generators=2,
    )
    tables = evaluation.expertise()
    assert list(tables) == ["G1 (generalist)", "G2 (idle)"]
    accuracy, wins = tables["G1 (generalist)"]
    assert (accuracy.to_numpy() == 100).all() and int(wins.to_numpy().sum()) == n
    assert evaluation.role_examples() == [0]  # an idle generator is no example of any role
    assert list(evaluation.expertise([1])) == ["G2 (idle)"]


def test_idle_generators_are_reported_apart_not_as_marginalists() -> None:
    """A synthetic win matrix (3 attacks x 100 samples, 5 generators): G2 and G4 win nothing. They are 'idle' with no
    accuracy and no coverage, and the three roles are counted among the generators that won samples only (the old
    rule made every idle generator a marginalist)."""
    evaluation = _wins(
        [(0, 0, 90, 81), (1, 0, 90, 81), (2, 0, 70, 63)]  # G0: 250 wins, every attack, 90% right: generalist
        + [(2, 1, 25, 20)]  # G1: 8.3% of the samples (under half the fair share, 10%), one attack, 80%: specialist
        + [(0, 3, 10, 1), (1, 3, 10, 1), (2, 3, 5, 0)],  # G3: 8.3%, 2 of 25 right (8%): marginalist
        attacks=3,
        generators=5,
    )
    roles = evaluation.generator_roles()
    assert roles["role"].tolist() == ["generalist", "specialist", "idle", "marginalist", "idle"]
    assert roles["wins"].tolist() == [250, 25, 0, 25, 0]
    assert roles.loc[[2, 4], "accuracy"].isna().all() and roles.loc[[2, 4], "attacks_covered"].tolist() == [0, 0]
    active = roles[roles["wins"] > 0]["role"].astype(str).value_counts().to_dict()
    assert active == {"generalist": 1, "specialist": 1, "marginalist": 1}
    assert (roles["role"] == "idle").sum() == 2 and "idle" in roles["role"].cat.categories
    assert evaluation.role_examples() == [0, 1, 3]


def test_minimal_fgsm_returns_the_smallest_fooling_eps_of_its_grid_analytically() -> None:
    """foolbox 2's FGSM search (Table 1 if the paper's eps were its max_epsilon) on a linear two-class model whose
    class-1 margin at step eps is mean(x) + eps - 0.9: image i fools first above eps* = 0.9 - a_i (a_i its grey level).
    Grid 0.0005 .. 0.5 (1000 steps): eps* = 0.12345 -> 0.1235; eps* = 0.0031 (below the 20th value, 0.01) is searched
    again on 20 steps up to 0.0035 -> 0.00315; eps* = 0.7 never fools (NaN, the image at 0.5); an image already
    misclassified is left alone (eps 0)."""
    from advlib.attacks.minimal_fgsm import minimal_fgsm

    model = nn.Linear(784, 2).double()
    with torch.no_grad():
        model.weight.zero_()
        model.weight[1] = 1 / 784
        model.bias.copy_(torch.tensor([0.0, -0.9]))
    levels = torch.tensor([0.9 - 0.12345, 0.9 - 0.0031, 0.2, 0.95], dtype=torch.float64)
    x = levels.view(-1, 1, 1).expand(-1, 784, 1).reshape(4, 784).clone()
    y = torch.zeros(4, dtype=torch.long)
    x_adv, eps = minimal_fgsm(nn.Sequential(nn.Flatten(), model), x.view(4, 1, 28, 28), y, 0.5, steps=1000)
    np.testing.assert_allclose(eps[[0, 1, 3]].numpy(), [0.1235, 0.00315, 0.0], rtol=0, atol=1e-12)
    assert eps[2].isnan()
    step = torch.tensor([0.1235, 0.00315, 0.5, 0.0], dtype=torch.float64).view(-1, 1, 1, 1)
    torch.testing.assert_close(x_adv, (x.view(4, 1, 28, 28) + step).clamp(0, 1), rtol=0, atol=1e-12)


def test_minimal_fgsm_matches_a_brute_force_search_and_stays_within_eps(mnist_model: nn.Module) -> None:
    """On LeNet and real digits: per image the first of 50 grid values up to the paper's eps 0.5 that fools (tried one
    by one), refined on 20 steps when it is among the first 20; never above 0.5; `fgsm_minimal` in the registry gives
    the same images and success exactly where a grid value fooled."""
    from advlib.attacks.minimal_fgsm import minimal_fgsm

    x, y = to_tensors(load_dataset("mnist5k", "test", n=40, seed=3))
    model = mnist_model.eval()
    x_adv, eps = minimal_fgsm(model, x, y, 0.5, steps=50)
    x_grad = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(F.cross_entropy(model(x_grad), y, reduction="sum"), x_grad)
    fools = lambda i, e: int(model((x[i] + e * gradient[i].sign()).clamp(0, 1)[None]).argmax()) != int(y[i])
    grid = torch.linspace(0, 0.5, 51, dtype=torch.float64)[1:].tolist()
    with torch.no_grad():
        for i in range(len(x)):
            if int(model(x[i : i + 1]).argmax()) != int(y[i]):
                expected = 0.0
            else:
                first = next((k for k, e in enumerate(grid) if fools(i, e)), None)
                expected = float("nan") if first is None else grid[first]
                if first is not None and first < 20:
                    expected = next(grid[first] * j / 20 for j in range(1, 21) if fools(i, grid[first] * j / 20))
            np.testing.assert_allclose(float(eps[i]), expected, rtol=0, atol=1e-12, err_msg=f"image {i}")
    found = ~eps.isnan()
    assert found.sum() >= 30 and float(eps[found].max()) <= 0.5
    assert float((x_adv - x).abs().amax()) <= 0.5 + 1e-6
    result = run_attack({"name": "fgsm_minimal", "eps": 0.5, "steps": 50}, model, x, y)
    torch.testing.assert_close(result.x_adv, x_adv, rtol=0, atol=1e-6)
    assert torch.equal(result.success, found & (eps > 0) | (eps == 0))
