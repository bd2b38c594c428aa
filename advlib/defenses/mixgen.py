"""Mixture-of-generators defense (Żelaszczyk & Mańdziuk, "Adversarial defenses via a mixture of generators").

Native PyTorch code: no maintained library offers this method. Competing generators learn, without labels
or attack ids, to map adversarial images back to the canonical image distribution judged by a
discriminator (Algorithm 1, eqs. 1-2, after Parascandolo et al. 2018); at test time each image is replaced
by the output of the generator the discriminator scores highest, and a pretrained classifier reads it.
Both training phases are `train.Step`s (`IdentityInitStep`, `CompetitiveStep`) run by `train.fit`, so a killed
training resumes from its last epoch to the weights an uninterrupted one reaches.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import check_images
from ..inference import evaluating, logits, model_device
from ..train import EpochCallback, GeneratorState, Step, fit

log = logging.getLogger("advlib")

# Generator roles of Sec. 4.6 (Fig. 4), as a stated rule; see DefenseEvaluation.generator_roles.
MARGINALIST_FAIR_SHARE = 0.5  # marginalist: below this fraction of the fair win share 1/G ...
MARGINALIST_ACCURACY = 50.0  # ... and below this accuracy (percent) on the samples it won (both, as in the paper)
COVERAGE_MIN_SHARE = 0.10  # a generator covers an attack when it wins at least this share of its samples
GENERALIST_MIN_COVERAGE = 0.5  # generalist: covers at least this fraction of the attacks; else specialist
ROLES = ("generalist", "specialist", "marginalist")  # the paper's three roles, given to generators that won samples
IDLE = "idle"  # a generator that won no sample has no role (no accuracy, no coverage): reported apart


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Stop gradients into `module`'s parameters for the block (it still passes gradients through)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _check_schedule(epochs: int, batch_size: int, lr: float) -> None:
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1; got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0; got {lr}")


class MixtureOfGenerators(nn.Module):
    """Generators G_1..G_N' and a discriminator D whose logit scores how canonical an image looks
    (the paper's D(x) = sigmoid(logit)); `defend` keeps, per image, the top-scored generator's output."""

    def __init__(self, generators: Sequence[nn.Module], discriminator: nn.Module) -> None:
        super().__init__()
        if len(generators) == 0:
            raise ValueError("a mixture needs at least one generator; got 0")
        self.generators = nn.ModuleList(generators)
        self.discriminator = discriminator

    @property
    def num_generators(self) -> int:
        return len(self.generators)

    def _score_batch(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """All generators' outputs (G, N, C, H, W) and their discriminator logits (G, N): eval mode, no grad,
        so no BatchNorm running statistic moves."""
        with torch.no_grad(), evaluating(self):
            outputs = torch.stack([generator(x) for generator in self.generators])
            logits = self.discriminator(outputs.flatten(0, 1)).view(self.num_generators, len(x))
        return outputs, logits

    def scores(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """Discriminator logits of every generator's output, shape (G, N), in batches (eval mode, no grad)."""
        check_images(x, "x", allow_empty=False)
        device = model_device(self)
        parts = [self._score_batch(x[i : i + batch_size].to(device))[1] for i in range(0, len(x), batch_size)]
        return torch.cat(parts, dim=1).to(x.device)

    def defend(self, x: Tensor, batch_size: int = 256) -> tuple[Tensor, Tensor]:
        """Per image, the output of argmax_j D(G_j(x)) and that winner's index (long), in batches."""
        check_images(x, "x", allow_empty=False)
        device = model_device(self)
        defended, winners = [], []
        for i in range(0, len(x), batch_size):
            outputs, logits = self._score_batch(x[i : i + batch_size].to(device))
            winner = logits.argmax(dim=0)
            defended.append(outputs[winner, torch.arange(len(winner), device=device)])
            winners.append(winner)
        return torch.cat(defended).to(x.device), torch.cat(winners).to(x.device)


class IdentityInitStep(Step):
    """Identity initialisation (Parascandolo et al. 2018; paper Sec. 4.1) as a `train.Step`: each generator takes one
    step of its own Adam per batch on MSE(G(x'), x') over the transformed images, so all start near the identity.

    One torch.Generator, seeded once with `seed`, draws every epoch's batch order; it is checkpointed with the
    generators and optimizers, and the global RNG is not reseeded per epoch, so a resumed run is bit-identical."""

    model: nn.ModuleList

    def __init__(
        self,
        generators: Sequence[nn.Module] | nn.ModuleList,
        transformed: Tensor,
        *,
        epochs: int,
        batch_size: int,
        lr: float = 1e-3,
        seed: int = 0,
    ) -> None:
        _check_schedule(epochs, batch_size, lr)
        check_images(transformed, "transformed", allow_empty=False)
        if len(generators) == 0:
            raise ValueError("identity_init needs at least one generator; got 0")
        self.model = generators if isinstance(generators, nn.ModuleList) else nn.ModuleList(generators)
        self.transformed, self.epochs, self.batch_size = transformed, epochs, batch_size
        self.optimizers = [torch.optim.Adam(g.parameters(), lr=lr) for g in self.model]
        self.order = torch.Generator().manual_seed(seed)
        self.state = {
            "generators": self.model,
            "order": GeneratorState(self.order),
            **{f"optimizer{j}": optimizer for j, optimizer in enumerate(self.optimizers)},
        }
        self.squared_error = 0.0

    def num_batches(self) -> int:
        return math.ceil(len(self.transformed) / self.batch_size)

    def begin_epoch(self, epoch: int, seed: int) -> None:
        """Train mode and a fresh sum; no global reseed (the batch order comes from `order`)."""
        self.model.train()
        self.squared_error = 0.0

    def batches(self, epoch: int, seed: int) -> Iterable[Tensor]:
        return torch.randperm(len(self.transformed), generator=self.order).split(self.batch_size)

    def update(self, batch: Tensor, epoch: int) -> dict[str, float]:
        """One Adam step per generator; the squared error is summed here, generator after generator (the order of
        the float additions fixes the history's last bits)."""
        for generator, optimizer in zip(self.model, self.optimizers):
            x = self.transformed[batch].to(model_device(generator))
            loss = F.mse_loss(generator(x), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self.squared_error += float(loss.detach()) * len(batch)
        return {}

    def record(self, epoch: int, sums: dict[str, float], batches: int) -> dict[str, Any]:
        mse = self.squared_error / (len(self.transformed) * len(self.model))
        log.info("mixgen identity init: epoch %d/%d, mse %.5f", epoch + 1, self.epochs, mse)
        return {"epoch": epoch + 1, "mse": mse}

    def progress(self, record: dict[str, Any]) -> dict[str, str]:
        return {"mse": f"{record['mse']:.5f}"}


def identity_init(
    generators: Sequence[nn.Module] | nn.ModuleList,
    transformed: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float = 1e-3,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[float]:
    """Train each generator so that G(x') ~ x' (`IdentityInitStep`), resuming from `checkpoint_dir` when it holds a
    checkpoint. Returns the per-epoch mean MSE; the generators come back in eval mode."""
    step = IdentityInitStep(generators, transformed, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    history = fit(step, seed=seed, checkpoint_dir=checkpoint_dir, on_epoch=on_epoch, desc="identity init")
    return [record["mse"] for record in history]


def faster_init(generator: nn.Module, n: int, *, zero_fraction: float = 0.05, seed: int = 0) -> list[nn.Module]:
    """n deep copies of one identity-initialised generator, each with `zero_fraction` of all its parameter
    scalars (chosen uniformly at random per copy) set to 0: the paper's faster initialization (Sec. 4.4)."""
    if n < 1:
        raise ValueError(f"n must be >= 1 generator; got {n}")
    if not 0 <= zero_fraction < 1:
        raise ValueError(f"zero_fraction must be in [0, 1); got {zero_fraction}")
    rng = torch.Generator().manual_seed(seed)
    copies = []
    for _ in range(n):
        clone = copy.deepcopy(generator)
        params = list(clone.parameters())
        sizes = [p.numel() for p in params]
        chosen = torch.zeros(sum(sizes), dtype=torch.bool)
        chosen[torch.randperm(sum(sizes), generator=rng)[: round(zero_fraction * sum(sizes))]] = True
        with torch.no_grad():
            for param, mask in zip(params, chosen.split(sizes)):
                param[mask.view_as(param).to(param.device)] = 0
        copies.append(clone)
    return copies


def _generator_step(
    mixture: MixtureOfGenerators, optimizers: Sequence[torch.optim.Optimizer], x: Tensor, winner: Tensor
) -> Tensor:
    """Eq. 1: each generator that won samples gets -log D(G_j(x')) summed over its won samples (divided by
    the batch size) and one Adam step; losers are not run, so their weights and BatchNorm buffers stay put.
    Returns the per-generator loss sums."""
    discriminator = mixture.discriminator
    sums = torch.zeros(mixture.num_generators)
    objective = x.new_zeros(())
    winners = [j for j in range(mixture.num_generators) if bool((winner == j).any())]
    with _frozen(discriminator), evaluating(discriminator):
        for j in winners:
            generator = mixture.generators[j]
            generator.train()
            logit = discriminator(generator(x[winner == j])).squeeze(1)
            generator.eval()
            loss = F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit), reduction="sum")
            objective = objective + loss
            sums[j] = float(loss.detach())
        for j in winners:
            optimizers[j].zero_grad(set_to_none=True)
        (objective / len(x)).backward()
    for j in winners:
        optimizers[j].step()
    return sums


def _discriminator_step(
    discriminator: nn.Module, optimizer: torch.optim.Optimizer, canonical: Tensor, outputs: Tensor
) -> float:
    """Eq. 2: BCE(D(x), 1) on canonical images + mean over generators of BCE(D(G_j(x')), 0); one Adam step."""
    discriminator.train()
    real = discriminator(canonical).squeeze(1)
    fake = discriminator(outputs.detach().flatten(0, 1)).squeeze(1)
    loss = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(
        fake, torch.zeros_like(fake)
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    discriminator.eval()
    return float(loss.detach())


class CompetitiveStep(Step):
    """Algorithm 1 (eqs. 1-2), unsupervised: no labels or attack ids are used. Per step, a batch of
    transformed images x' and an independent batch of canonical images x:

    1. score every G_j(x') with D, all modules in eval mode and without gradients (so the scores match
       `defend` and no loser's BatchNorm statistics move); winner = argmax_j D(G_j(x')), no gradient;
    2. each generator that won samples recomputes its outputs on them in train mode and takes one step of
       its own Adam on -log D(G_j(x')) (BCE-with-logits against 1) summed over them / batch size;
       generators that won nothing are not touched (weights, BatchNorm buffers and Adam state);
    3. D takes one Adam step on BCE(D(x), 1) + mean_j BCE(D(G_j(x')), 0), on the step-1 outputs.

    One torch.Generator, seeded once with `seed`, draws both batch orders of every epoch; it is checkpointed with the
    mixture and the optimizers, and the global RNG is not reseeded per epoch, so a run (and a resumed run) is
    deterministic. An epoch's record: generator_loss (mean over x'), generator_losses (per generator, mean over its
    won samples, NaN if none), discriminator_loss (mean over steps), wins (per generator).
    """

    model: MixtureOfGenerators

    def __init__(
        self,
        mixture: MixtureOfGenerators,
        canonical: Tensor,
        transformed: Tensor,
        *,
        epochs: int,
        batch_size: int,
        lr: float = 1e-3,
        seed: int = 0,
    ) -> None:
        _check_schedule(epochs, batch_size, lr)
        check_images(canonical, "canonical", allow_empty=False)
        check_images(transformed, "transformed", allow_empty=False)
        if canonical.shape[1:] != transformed.shape[1:]:
            raise ValueError(
                f"canonical and transformed images differ in shape: {tuple(canonical.shape[1:])} vs "
                f"{tuple(transformed.shape[1:])}"
            )
        self.model, self.canonical, self.transformed = mixture, canonical, transformed
        self.epochs, self.batch_size = epochs, batch_size
        self.device = model_device(mixture)
        self.generator_optimizers = [torch.optim.Adam(g.parameters(), lr=lr) for g in mixture.generators]
        self.discriminator_optimizer = torch.optim.Adam(mixture.discriminator.parameters(), lr=lr)
        self.order = torch.Generator().manual_seed(seed)
        self.state = {
            "mixture": mixture,
            "order": GeneratorState(self.order),
            "discriminator_optimizer": self.discriminator_optimizer,
            **{f"generator_optimizer{j}": optimizer for j, optimizer in enumerate(self.generator_optimizers)},
        }
        self.wins = torch.zeros(mixture.num_generators, dtype=torch.long)
        self.generator_sums = torch.zeros(mixture.num_generators)

    def num_batches(self) -> int:
        return math.ceil(len(self.transformed) / self.batch_size)

    def begin_epoch(self, epoch: int, seed: int) -> None:
        """Eval mode (each step switches a module to train mode only for its own update) and fresh per-generator
        sums; no global reseed (the batch orders come from `order`)."""
        self.model.eval()
        self.wins = torch.zeros(self.model.num_generators, dtype=torch.long)
        self.generator_sums = torch.zeros(self.model.num_generators)

    def batches(self, epoch: int, seed: int) -> Iterable[tuple[Tensor, Tensor]]:
        """(transformed indices, canonical indices) per step: the transformed order, then the canonical order, both
        drawn at the start of the epoch; the canonical images are taken in their order, wrapping around."""
        transformed = torch.randperm(len(self.transformed), generator=self.order).split(self.batch_size)
        canonical = torch.randperm(len(self.canonical), generator=self.order)
        return [
            (index, canonical[(step * self.batch_size + torch.arange(len(index))) % len(self.canonical)])
            for step, index in enumerate(transformed)
        ]

    def update(self, batch: tuple[Tensor, Tensor], epoch: int) -> dict[str, float]:
        index, picks = batch
        mixture = self.model
        x_t, x_c = self.transformed[index].to(self.device), self.canonical[picks].to(self.device)
        outputs, logits = mixture._score_batch(x_t)
        winner = logits.argmax(dim=0)
        self.generator_sums += _generator_step(mixture, self.generator_optimizers, x_t, winner)
        discriminator_loss = _discriminator_step(mixture.discriminator, self.discriminator_optimizer, x_c, outputs)
        self.wins += torch.bincount(winner.cpu(), minlength=mixture.num_generators)
        return {"discriminator_loss": discriminator_loss}

    def record(self, epoch: int, sums: dict[str, float], batches: int) -> dict[str, Any]:
        record = {
            "epoch": epoch + 1,
            "generator_loss": float(self.generator_sums.sum()) / len(self.transformed),
            "generator_losses": [float(s / w) if w > 0 else math.nan for s, w in zip(self.generator_sums, self.wins)],
            "discriminator_loss": sums["discriminator_loss"] / batches,
            "wins": self.wins.tolist(),
        }
        log.info(
            "mixgen training: epoch %d/%d, generator loss %.4f, discriminator loss %.4f, wins %s",
            epoch + 1,
            self.epochs,
            record["generator_loss"],
            record["discriminator_loss"],
            record["wins"],
        )
        return record

    def progress(self, record: dict[str, Any]) -> dict[str, str]:
        return {"g": f"{record['generator_loss']:.3f}", "d": f"{record['discriminator_loss']:.3f}"}


def train_competitive(
    mixture: MixtureOfGenerators,
    canonical: Tensor,
    transformed: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float = 1e-3,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[dict[str, Any]]:
    """Train the mixture by Algorithm 1 (`CompetitiveStep`), resuming from `checkpoint_dir` when it holds a
    checkpoint; `on_epoch(epoch, mixture, record)` runs after each epoch. Returns the per-epoch history; the mixture
    comes back in eval mode."""
    step = CompetitiveStep(mixture, canonical, transformed, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    return fit(step, seed=seed, checkpoint_dir=checkpoint_dir, on_epoch=on_epoch, desc="mixgen training")


def _array(name: str, values: Any) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one value per sample (1-d); got shape {array.shape}")
    return array


@dataclass
class DefenseEvaluation:
    """Per-sample outcome of the defense over several attacks, with the breakdowns of Sec. 4.6 / Fig. 4.

    `attack` indexes `attack_names`; `winner` is the generator whose output was classified; `correct` and
    `correct_undefended` say whether the classifier was right on the defended and on the raw adversarial
    image. `num_generators` defaults (0) to the highest winner + 1. The per-sample fields may be given as tensors or
    array-likes; they are stored as 1-d numpy arrays.
    """

    y: np.ndarray
    attack: np.ndarray
    attack_names: list[str]
    winner: np.ndarray
    correct: np.ndarray
    correct_undefended: np.ndarray
    num_generators: int = 0  # 0: the highest winner + 1
    num_classes: int = 10

    def __post_init__(self) -> None:
        self.y = _array("y", self.y).astype(np.int64)
        self.attack = _array("attack", self.attack).astype(np.int64)
        self.winner = _array("winner", self.winner).astype(np.int64)
        self.correct = _array("correct", self.correct).astype(bool)
        self.correct_undefended = _array("correct_undefended", self.correct_undefended).astype(bool)
        self.attack_names = list(self.attack_names)
        lengths = {
            name: len(getattr(self, name)) for name in ("y", "attack", "winner", "correct", "correct_undefended")
        }
        if len(set(lengths.values())) != 1 or len(self.y) == 0:
            raise ValueError(f"per-sample fields need one and the same non-zero length; got {lengths}")
        if self.attack.min() < 0 or self.attack.max() >= len(self.attack_names):
            raise ValueError(
                f"attack indices must be in [0, {len(self.attack_names)}) to index attack_names "
                f"{self.attack_names}; got values {self.attack.min()}..{self.attack.max()}"
            )
        if self.num_generators == 0:
            self.num_generators = int(self.winner.max()) + 1
        if self.winner.min() < 0 or self.winner.max() >= self.num_generators:
            raise ValueError(
                f"winner indices must be in [0, {self.num_generators}); "
                f"got values {self.winner.min()}..{self.winner.max()}"
            )
        if self.y.min() < 0 or self.y.max() >= self.num_classes:
            raise ValueError(f"labels must be in [0, {self.num_classes}); got values {self.y.min()}..{self.y.max()}")

    def _check_generator(self, generator: int) -> None:
        if not 0 <= generator < self.num_generators:
            raise ValueError(f"generator must be in [0, {self.num_generators}); got {generator}")

    def accuracy(self) -> float:
        """Classifier accuracy (percent) on the defended images, over all attacks."""
        return 100.0 * float(self.correct.mean())

    def accuracy_undefended(self) -> float:
        """Classifier accuracy (percent) on the raw adversarial images: the baseline the defense must beat."""
        return 100.0 * float(self.correct_undefended.mean())

    def accuracy_by_attack(self) -> pd.Series:
        """Defended accuracy (percent) per attack, indexed by attack name."""
        counts = np.bincount(self.attack, minlength=len(self.attack_names))
        hits = np.bincount(self.attack, weights=self.correct, minlength=len(self.attack_names))
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(counts > 0, 100.0 * hits / counts, np.nan)
        return pd.Series(values, index=pd.Index(self.attack_names, name="attack"), name="accuracy")

    def _class_attack_counts(self, mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        cells = self.y[mask] * len(self.attack_names) + self.attack[mask]
        counts = np.bincount(
            cells,
            weights=None if weights is None else weights[mask],
            minlength=self.num_classes * len(self.attack_names),
        )
        return counts.reshape(self.num_classes, len(self.attack_names))

    def _frame(self, values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(
            values,
            index=pd.RangeIndex(self.num_classes, name="class"),
            columns=pd.Index(self.attack_names, name="attack"),
        )

    def class_attack_accuracy(self, generator: int | None = None) -> pd.DataFrame:
        """Defended accuracy (percent) per class (rows) and attack (columns), over the samples `generator`
        won when given (all samples otherwise); NaN where there are none (Fig. 4, left)."""
        mask = np.ones(len(self.y), dtype=bool)
        if generator is not None:
            self._check_generator(generator)
            mask = self.winner == generator
        counts = self._class_attack_counts(mask)
        hits = self._class_attack_counts(mask, self.correct.astype(np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._frame(np.where(counts > 0, 100.0 * hits / counts, np.nan))

    def class_attack_wins(self, generator: int) -> pd.DataFrame:
        """Number of samples per class (rows) and attack (columns) that `generator` won (Fig. 4, right)."""
        self._check_generator(generator)
        return self._frame(self._class_attack_counts(self.winner == generator).astype(np.int64))

    def generator_roles(self) -> pd.DataFrame:
        """One row per generator: wins, win_share, accuracy (percent on won samples), attacks_covered and role.

        Rule (Sec. 4.6, made explicit), for generators that won at least one sample: an attack is covered when the
        generator wins >= COVERAGE_MIN_SHARE (10%) of its samples. marginalist ("fails to win on a significant
        number of samples and has questionable accuracy levels"): win share < MARGINALIST_FAIR_SHARE / G (under
        half its fair share) AND accuracy on won samples < MARGINALIST_ACCURACY (50%). Otherwise generalist ("wins
        on a large number of samples ... on the majority of the attacks") when it covers at least
        GENERALIST_MIN_COVERAGE (half) of the attacks, else specialist ("focuses on specific kinds of attacks"),
        whatever its accuracy: a generator that wins few samples of a hard attack but classifies them well is a
        specialist, and so is one that wins many at low accuracy. A generator that won nothing is IDLE ('idle'),
        not a marginalist: the paper's marginalists win some samples, and an idle one has no accuracy to judge.
        """
        g, a = self.num_generators, len(self.attack_names)
        wins = np.bincount(self.winner, minlength=g)
        hits = np.bincount(self.winner, weights=self.correct.astype(np.float64), minlength=g)
        by_attack = np.bincount(self.winner * a + self.attack, minlength=g * a).reshape(g, a)
        attack_sizes = np.bincount(self.attack, minlength=a)
        covered = ((by_attack > 0) & (by_attack >= COVERAGE_MIN_SHARE * attack_sizes)).sum(axis=1)
        share = wins / len(self.winner)
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy = np.where(wins > 0, 100.0 * hits / wins, np.nan)
        roles = []
        for j in range(g):
            if wins[j] == 0:
                roles.append(IDLE)
            elif share[j] < MARGINALIST_FAIR_SHARE / g and accuracy[j] < MARGINALIST_ACCURACY:
                roles.append("marginalist")
            elif covered[j] >= GENERALIST_MIN_COVERAGE * a:
                roles.append("generalist")
            else:
                roles.append("specialist")
        return pd.DataFrame(
            {
                "wins": wins,
                "win_share": share,
                "accuracy": accuracy,
                "attacks_covered": covered,
                "role": pd.Categorical(roles, categories=(*ROLES, IDLE)),
            },
            index=pd.RangeIndex(g, name="generator"),
        )

    def expertise(self, generators: Sequence[int] | None = None) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
        """Per generator (all, or those given), labelled 'G<n> (<role>)': its accuracy and wins per class x attack."""
        roles = self.generator_roles()["role"]
        chosen = range(self.num_generators) if generators is None else generators
        return {f"G{g + 1} ({roles[g]})": (self.class_attack_accuracy(g), self.class_attack_wins(g)) for g in chosen}

    def role_examples(self) -> list[int]:
        """The first generator of each role present, in the order generalist, specialist, marginalist (Fig. 4; idle
        generators are never examples)."""
        roles = self.generator_roles()["role"]
        return [int(roles.index[roles == role][0]) for role in ROLES if (roles == role).any()]


def evaluate_defense(
    mixture: MixtureOfGenerators,
    classifier: nn.Module,
    adversarials: Mapping[str, tuple[Tensor, Tensor]],
    *,
    batch_size: int = 256,
) -> DefenseEvaluation:
    """Defend each attack's adversarial images and classify them with and without the defense (classifier in
    eval mode, no grad). `adversarials` maps attack name -> (x_adv, true labels)."""
    if not adversarials:
        raise ValueError("adversarials is empty; give at least one attack name -> (x_adv, y)")
    parts: dict[str, list[Tensor]] = {key: [] for key in ("y", "attack", "winner", "correct", "undefended")}
    num_classes = 0
    with torch.no_grad(), evaluating(classifier):
        for index, (name, (x_adv, y)) in enumerate(adversarials.items()):
            if len(x_adv) != len(y):
                raise ValueError(f"attack {name!r}: {len(x_adv)} images but {len(y)} labels")
            x_def, winner = mixture.defend(x_adv, batch_size=batch_size)
            for key, images in (("correct", x_def), ("undefended", x_adv)):
                outputs = logits(classifier, images, batch_size).cpu()
                num_classes = outputs.shape[1]
                parts[key].append(outputs.argmax(dim=1) == y.cpu())
            parts["y"].append(y.cpu())
            parts["attack"].append(torch.full((len(y),), index, dtype=torch.long))
            parts["winner"].append(winner.cpu())
    return DefenseEvaluation(
        y=torch.cat(parts["y"]).numpy(),
        attack=torch.cat(parts["attack"]).numpy(),
        attack_names=list(adversarials),
        winner=torch.cat(parts["winner"]).numpy(),
        correct=torch.cat(parts["correct"]).numpy(),
        correct_undefended=torch.cat(parts["undefended"]).numpy(),
        num_generators=mixture.num_generators,
        num_classes=num_classes,
    )
