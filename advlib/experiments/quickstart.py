"""The quickstart: LeNet-5 trained on MNIST, attacked by a suite, with the standard curves and the sanity claims every
robustness paper relies on, each checked on the table it cites."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import pandas as pd
from torch import Tensor

from ..cache import Trained
from ..claims import Claim, Comparison
from ..data import dataset_info, load_dataset, to_tensors
from ..evaluate import (
    SuiteResult,
    UnionResult,
    accuracy_vs_eps,
    accuracy_vs_steps,
    attack_suite,
    per_class_attack_table,
    union_robustness,
)
from ..params import QuickstartParams
from ..train import train_classifier
from .base import Study, artifact

Tables = Mapping[str, Any]


class QuickstartStudy(Study):
    """One quickstart run: the trained classifier, its evaluation images and every table, each cached."""

    stem = "quickstart"
    budget = ("train.epochs",)
    p: QuickstartParams

    @cached_property
    def trained(self) -> Trained:
        return train_classifier(self.p.train, self.p.data, seed=self.p.seed, device=self.device, cache=self.cache)

    @cached_property
    def evaluation_set(self) -> tuple[Tensor, Tensor]:
        """The first `n_eval` test images, on the study's device."""
        x, y = to_tensors(load_dataset(self.p.data.name, "test", n=self.p.n_eval))
        return x.to(self.device), y.to(self.device)

    @cached_property
    def suite(self) -> SuiteResult:
        x, y = self.evaluation_set
        return attack_suite(self.trained.model, x, y, self.p.attacks, model_key=self.trained.key, cache=self.cache)

    @cached_property
    def union(self) -> UnionResult:
        x, y = self.evaluation_set
        return union_robustness(self.trained.model, x, y, self.p.attacks, model_key=self.trained.key, cache=self.cache)

    @artifact("attack_suite", "Accuracy (%) of the classifier under each attack of the suite.")
    def attack_suite(self) -> pd.DataFrame:
        return self.suite.table()

    @artifact("union", "Clean accuracy and accuracy under the union of the suite's attacks (%).")
    def union_table(self) -> pd.DataFrame:
        return union_table(
            float(self.union.clean_correct.float().mean()), self.union.robust_accuracy, len(self.p.attacks)
        )

    @artifact("per_class_attack", "Accuracy (%) per class and attack.")
    def per_class_attack(self) -> pd.DataFrame:
        _, y = self.evaluation_set
        robust = {"clean": self.suite.clean, **self.suite.robust()}
        return per_class_attack_table(y, robust, dataset_info(self.p.data.name).num_classes)

    @artifact("accuracy_vs_eps", "Robust accuracy (%) as the attack's budget grows.")
    def accuracy_vs_eps(self) -> pd.DataFrame:
        x, y = self.evaluation_set
        curve = self.p.eps_curve
        return accuracy_vs_eps(
            self.trained.model, x, y, curve.attack, curve.eps, model_key=self.trained.key, cache=self.cache
        )

    @artifact("accuracy_vs_steps", "Robust accuracy (%) after each PGD step, from one run that records every iterate.")
    def accuracy_vs_steps(self) -> pd.DataFrame:
        x, y = self.evaluation_set
        curve = self.p.steps_curve
        return accuracy_vs_steps(
            self.trained.model, x, y, curve.attack, curve.steps, model_key=self.trained.key, cache=self.cache
        )

    def claims(self) -> list[Claim]:
        return claims(n_images=self.p.n_eval)


def union_table(clean_accuracy: float, robust_accuracy: float, attacks: int) -> pd.DataFrame:
    """The union result as a one-row table (percent), so the claims can cite it like any other output."""
    return pd.DataFrame([{"attacks": attacks, "clean": 100 * clean_accuracy, "union": 100 * robust_accuracy}])


def _pgd_fgsm_pair(suite: pd.Series) -> tuple[str, str]:
    """The suite's labels of Linf PGD and FGSM at a common eps (KeyError, i.e. not measured, if there is none)."""
    for label in suite.index:
        if label.startswith("fgsm@") and (pgd := "pgd_linf@" + label.split("@", 1)[1]) in suite.index:
            return pgd, label
    raise KeyError("pgd_linf and fgsm at a common eps")


def claims(n_images: int) -> list[Claim]:
    """Sanity claims every robustness paper relies on, as comparisons of accuracies on the same `n_images` images
    (per-image outcomes are not kept, so the unpaired interval, which is the conservative one here), and the union's
    identity, which is exact."""

    def suite(t: Tables) -> pd.Series:
        return t["attack_suite"].set_index("attack")["accuracy"]

    def eps_steps(t: Tables) -> list[Comparison]:
        curve = t["accuracy_vs_eps"].reset_index(drop=True)
        return [
            Comparison.accuracies(
                (f"eps {curve['eps'].iloc[i]:g}", curve["accuracy"].iloc[i]),
                (f"eps {curve['eps'].iloc[i - 1]:g}", curve["accuracy"].iloc[i - 1]),
                "<=",
                n_images,
            )
            for i in range(1, len(curve))
        ]

    def pgd_vs_fgsm(t: Tables) -> Comparison:
        pgd, fgsm = _pgd_fgsm_pair(suite(t))
        return Comparison.accuracies((pgd, suite(t)[pgd]), (fgsm, suite(t)[fgsm]), "<=", n_images)

    def longest_vs_one_step(t: Tables) -> Comparison:
        steps = t["accuracy_vs_steps"]["accuracy"].reset_index(drop=True)
        return Comparison.accuracies(
            (f"{len(steps) - 1} steps", steps.iloc[-1]), ("1 step", steps.iloc[1]), "<", n_images
        )

    def union_vs_strongest(t: Tables) -> Comparison:
        """An identity, not a sample: the union's robust images are a subset of each attack's on the same images."""
        single = suite(t).drop("clean")
        return Comparison.exact(
            ("union", t["union"]["union"].iloc[0]),
            (f"strongest single ({single.idxmin()})", single.min()),
            "<=",
            n_images,
        )

    return [
        Claim(
            "eps_monotone",
            "Robust accuracy does not increase as the Linf budget grows (accuracy_vs_eps).",
            ("accuracy_vs_eps",),
            eps_steps,
        ),
        Claim(
            "pgd_beats_fgsm",
            "Iterative PGD is at least as strong as single-step FGSM at the same eps (attack_suite).",
            ("attack_suite",),
            pgd_vs_fgsm,
        ),
        Claim(
            "steps_help_attacker",
            "More PGD steps lower robust accuracy (accuracy_vs_steps).",
            ("accuracy_vs_steps",),
            longest_vs_one_step,
        ),
        Claim(
            "union_below_each",
            "The union of attacks, computed by its own cascade, is at most as accurate as the "
            "strongest single attack of the suite (union, attack_suite).",
            ("union", "attack_suite"),
            union_vs_strongest,
            note=lambda t: (
                "with every sample's draws keyed to its position the cascade and the single attacks should agree, "
                "so an excess of the union is a defect to report"
            ),
        ),
    ]
