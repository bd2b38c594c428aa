"""Why Separate2Adv sits above the midpoint of SingleAdv and Ensemble2Adv at `default` (claim separate_near_single,
Strength in Numbers Table 1c): each member alone, the ensemble attacked through its averaged probabilities (the
paper's output) and through its averaged logits, and the union of the two attacks, for Separate2Adv and Ensemble2Adv.

Reads the trained systems from the cache of a `default` run (run `advlib run strength_in_numbers --profile default`
first) and writes investigations/separate2adv.md. Usage: python investigations/separate2adv.py [profile]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch

from advlib import params, runtime
from advlib.attacks import create_attack
from advlib.evaluate import accuracy
from advlib.experiments.strength_in_numbers import EnsembleStudy
from advlib.models import Ensemble


def survives(model: torch.nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample correctness of `model` on `x_adv`."""
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def main(profile: str = "default") -> None:
    p = params.load("strength_in_numbers", profile, {})
    run = runtime.Run("strength_in_numbers", profile, p, seed=p.seed, device=p.device, threads=p.threads, dtype=p.dtype)
    study = EnsembleStudy(p, run.device)
    x, y = study.evaluation_set
    spec = p.long_attacks["PGD"]
    seed = p.seeds[0]
    rows = []
    for name in ("SingleAdv", "Ensemble2Adv", "Separate2Adv"):
        members = list(study.system(name, seed).model.members)
        prob = Ensemble(members, mode="prob").eval()
        logit = Ensemble(members, mode="logit").eval()
        by_prob = create_attack(spec)(prob, x, y).x_adv
        by_logit = create_attack(spec)(logit, x, y).x_adv
        union = survives(prob, by_prob, y) & survives(prob, by_logit, y)
        row = {
            "system": name,
            "clean": 100 * accuracy(prob, x, y),
            "PGD on probabilities (Table 1c)": 100 * accuracy(prob, by_prob, y),
            "PGD on logits, scored on probabilities": 100 * accuracy(prob, by_logit, y),
            "union of the two": 100 * union.float().mean().item(),
        }
        for i, member in enumerate(members):
            member.eval()
            row[f"member {i} alone under its own PGD"] = 100 * accuracy(
                member, create_attack(spec)(member, x, y).x_adv, y
            )
        rows.append(row)
    table = pd.DataFrame(rows).set_index("system")
    out = Path(__file__).with_suffix(".md")
    out.write_text(
        f"# Separate2Adv vs SingleAdv and Ensemble2Adv ({profile} profile, {len(y)} images, seed {seed})\n\n"
        f"Accuracy (%) under Table 1c's long PGD ({spec.steps} steps, Adam update, eps {spec.eps}); written by "
        f"`python investigations/separate2adv.py {profile}` on {runtime.cpu_model()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s).\n\n" + table.round(1).to_markdown() + "\n"
    )
    print(table.round(1).to_string())


if __name__ == "__main__":
    main(*sys.argv[1:])
