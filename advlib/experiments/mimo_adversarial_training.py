"""The experiments of "Resilience to Multiple Attacks via Adversarially Trained MIMO Ensembles" as cached runs.

Every system of Tables 4 and 8 is trained once by `defenses.mat.fit_mimo` (single models through `SingleAsMIMO`) and
cached with its per-epoch history: loss, counted forward/backward passes per batch (Table 6), seconds (Table 7) and,
for MIMO systems, the cross-gradient ratio and sign disagreement on a fixed batch (Figures 1 and 4). Evaluations are
cached per model and attack; unions follow the paper's rule (broken = success within eps + 1e-4).
"""
from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..cache import Cache, cached_model, make_key
from ..data import dataset_info, load_dataset, to_tensors
from ..defenses.mat import NormStep, cross_gradient_ratio, fit_mimo, mat_attack, msd_attack, sign_disagreement
from ..evaluate import accuracy_vs_eps, accuracy_vs_steps, attack, attack_suite
from ..models import Ensemble, create_model_for
from ..models.mimo import MIMOAverage, MIMOMember, SingleAsMIMO, create_mimo
from ..params import MATParams
from ..report import Claim

LABELS = {"standard": "standard", "linf_at": "Linf AT", "l2_at": "L2 AT", "l1_at": "L1 AT", "vanilla": "Vanilla Ensemble",
          "msd": "MSD", "mat": "MAT", "mat_linf": "MAT(Linf)", "mat_l2": "MAT(L2)", "mat_msd": "MAT+MSD"}
SINGLE_AT = {"linf_at": "linf", "l2_at": "l2", "l1_at": "l1"}


class MATStudy:
    """One notebook run: every system trained (cached) and the paper's tables and figures from them."""

    def __init__(self, p: MATParams, device: torch.device | str = "cpu", cache: Cache | None = None) -> None:
        self.p, self.device, self.cache = p, torch.device(device), cache or Cache()
        self.info = dataset_info(p.data.name)
        self.train_set = load_dataset(p.data.name, "train", n=p.data.n_train, seed=p.seed, download=p.data.download)
        x, y = to_tensors(load_dataset(p.data.name, "test", n=p.n_eval, seed=p.seed, download=p.data.download))
        self.x, self.y = x.to(self.device), y.to(self.device)
        self._trained: dict[str, tuple[nn.Module, dict[str, Any], str]] = {}

    # -- systems ---------------------------------------------------------------------------
    def norm_steps(self, norms: list[str]) -> list[NormStep]:
        return [NormStep(n, self.p.threats[n].eps, self.p.threats[n].stepsize) for n in norms]

    def _recipe(self, name: str) -> tuple[nn.Module, Any, int, list[str]]:
        """(module to train, inner attack, members, norms) of a trained system."""
        p, k = self.p, self.p.iterations
        all_norms = ["linf", "l2", "l1"]
        if name == "standard" or name in SINGLE_AT or name == "msd":
            model = create_model_for(p.msd_model if name == "msd" else p.train.model, self.info, **p.train.model_options)
            norms = [SINGLE_AT[name]] if name in SINGLE_AT else all_norms if name == "msd" else []
            return SingleAsMIMO(model), self._inner(name, norms, k), 1, norms
        norms = {"mat": list(p.members), "mat_linf": ["linf"] * len(p.members), "mat_l2": ["l2"] * len(p.members),
                 "mat_msd": all_norms}[name]
        members = len(p.members)
        model = create_mimo(p.train.model, self.info, members, **p.train.model_options)
        return model, self._inner(name, norms, k), members, norms

    def _inner(self, name: str, norms: list[str], k: int):
        if not norms:
            return None
        steps = self.norm_steps(norms)
        if name in ("msd", "mat_msd"):
            return lambda model, x, y, g, scale: msd_attack(model, x, y, [s.scaled(scale) for s in steps], k, generator=g)
        return lambda model, x, y, g, scale: mat_attack(model, x, y, [s.scaled(scale) for s in steps], k, generator=g)

    def _diagnostic_batch(self, members: int) -> tuple[Tensor, Tensor]:
        n = self.p.diagnostics_images
        x, y = to_tensors(self.train_set, n=n * members)
        return x.view(n, members, *x.shape[1:]).to(self.device), y.view(n, members).to(self.device)

    def trained(self, name: str) -> tuple[nn.Module, dict[str, Any], str]:
        """The trained module of a system (a MIMO network, or SingleAsMIMO), its history and cache key."""
        if name in self._trained:
            return self._trained[name]
        if name == "vanilla":
            raise ValueError("'vanilla' is not trained: it averages linf_at, l2_at and l1_at (see classifier)")
        p = self.p
        torch.manual_seed(p.seed)
        module, inner, members, norms = self._recipe(name)
        module = module.to(self.device)
        key = {"system": name, "norms": norms, "members": members, "iterations": p.iterations,
               **({"ramp_epochs": p.ramp_epochs} if p.ramp_epochs and norms else {}),
               "threats": {n: p.threats[n].model_dump() for n in sorted(set(norms))},
               "model": p.msd_model if name == "msd" else p.train.model, "train": p.train.model_dump(mode="json"),
               "data": p.data.model_dump(mode="json", exclude={"download"}), "seed": p.seed}
        diagnostics = None
        if members > 1:
            x_d, y_d = self._diagnostic_batch(members)
            steps = self.norm_steps(norms if len(norms) == members else ["linf"] * members)

            def diagnostics(epoch: int, model: nn.Module, record: dict[str, Any]) -> None:
                model.eval()
                record["cross_gradient_ratio"] = cross_gradient_ratio(model, x_d, y_d).tolist()
                record["sign_disagreement"] = sign_disagreement(model, x_d, y_d, steps).tolist()
                model.train()

        def build(target: nn.Module, checkpoint_dir) -> dict[str, Any]:
            return fit_mimo(target, self.train_set, p.train, members=members, inner=inner, seed=p.seed,
                            device=self.device, checkpoint_dir=checkpoint_dir, on_epoch=diagnostics,
                            ramp_epochs=p.ramp_epochs,
                            desc=f"train {LABELS[name]}")

        module, meta = cached_model("mat", key, module, build, cache=self.cache, label=LABELS[name])
        self._trained[name] = (module.eval(), meta, make_key("mat", key))
        return self._trained[name]

    def classifier(self, name: str) -> tuple[nn.Module, str]:
        """The system as a classifier of (N, C, H, W) images and a key for caching its attacks."""
        if name == "vanilla":
            parts = [self.classifier(n) for n in ("linf_at", "l2_at", "l1_at")]
            return Ensemble([m for m, _ in parts]).eval(), "+".join(k for _, k in parts)
        module, _, key = self.trained(name)
        return (module.model if isinstance(module, SingleAsMIMO) else MIMOAverage(module)).eval(), key

    def sub_models(self, name: str) -> list[tuple[str, nn.Module, str]]:
        """(label, classifier, key) of each sub-model: the AT models of the vanilla ensemble, or MIMO members."""
        if name == "vanilla":
            return [(f"Sub-model {i + 1} ({SINGLE_AT[n]})", *self.classifier(n)) for i, n in enumerate(("linf_at", "l2_at", "l1_at"))]
        module, _, key = self.trained(name)
        norms = self._recipe(name)[3]
        return [(f"Sub-model {m + 1} ({norms[m]})", MIMOMember(module, m).eval(), f"{key}/member{m}")
                for m in range(module.members)]

    # -- Tables 4 and 8 --------------------------------------------------------------------
    def robustness_table(self, systems: list[str]) -> pd.DataFrame:
        """Robust accuracy (%) of each system (columns): clean, every attack, the union of each group and of all."""
        columns = {}
        for name in tqdm(systems, desc="systems", leave=False):
            model, key = self.classifier(name)
            suite = attack_suite(model, self.x, self.y, list(self.p.eval_attacks.values()), model_key=key, cache=self.cache)
            robust = dict(zip(self.p.eval_attacks, suite.robust().values()))
            column = {"clean": 100 * float(suite.clean.float().mean())}
            for group, names in self.p.groups.items():
                column.update({a: 100 * float(robust[a].float().mean()) for a in names})
                column[f"All {group}"] = 100 * float(torch.stack([robust[a] for a in names]).all(0).float().mean())
            column["All attacks"] = 100 * float(torch.stack(list(robust.values())).all(0).float().mean())
            columns[LABELS[name]] = column
        return pd.DataFrame(columns)

    # -- Table 3 and the transferability tables --------------------------------------------
    def table3(self, name: str = "mat") -> pd.DataFrame:
        """The system and each sub-model against the PGD of every norm (robust accuracy, %)."""
        model, key = self.classifier(name)
        entries = [(LABELS[name], model, key)] + self.sub_models(name)
        rows = {}
        for norm, spec in self.p.transfer_attacks.items():
            rows[f"PGD {norm}"] = {label: 100 * float((~attack(spec, m, self.x, self.y, model_key=k, cache=self.cache)
                                                       .broken(tol=1e-4)).float().mean()) for label, m, k in entries}
        return pd.DataFrame(rows).T

    def transfer_table(self, name: str, norm: str) -> pd.DataFrame:
        """Misclassified test images (of n_eval) on every target (columns) under the `norm` PGD crafted on the
        sub-model trained for `norm` and on the ensemble (rows), with the clean errors ('No Attack') and the
        ratio r_ij = N_ij / N_ii (source row's count on itself)."""
        spec = self.p.transfer_attacks[norm]
        ensemble, ensemble_key = self.classifier(name)
        targets = self.sub_models(name) + [(LABELS[name], ensemble, ensemble_key)]
        sources = [t for t in targets[:-1] if t[0].endswith(f"({norm})")][:1] + [targets[-1]]
        counts, ratios = {}, {}
        for label, source, key in sources:
            x_adv = attack(spec, source, self.x, self.y, model_key=key, cache=self.cache).x_adv
            counts[label] = {t: int((_predict(m, x_adv) != self.y).sum()) for t, m, _ in targets}
            ratios[label] = {t: 100 * counts[label][t] / max(counts[label][label], 1) for t, _, _ in targets}
        counts["No Attack"] = {t: int((_predict(m, self.x) != self.y).sum()) for t, m, _ in targets}
        return pd.concat({"count": pd.DataFrame(counts).T, "ratio %": pd.DataFrame(ratios).T}, axis=1)

    # -- Tables 6 and 7 --------------------------------------------------------------------
    def passes_table(self, systems: list[str]) -> pd.DataFrame:
        """Forward and backward passes per batch, counted in the last training epoch, beside Table 6's formula."""
        k, m = self.p.iterations, len(self.p.members)
        formula = {"standard": (1, 1), "linf_at": (k + 1, k + 1), "l2_at": (k + 1, k + 1), "l1_at": (k + 1, k + 1),
                   "msd": (4 * k + 1, k + 1), "mat": (k + 1, k + 1), "mat_linf": (k + 1, k + 1), "mat_l2": (k + 1, k + 1),
                   "mat_msd": (4 * k + 1, k + 1)}
        rows = {}
        for name in systems:
            if name == "vanilla":
                rows[LABELS[name]] = {"forward": float("nan"), "backward": float("nan"),
                                      "formula forward": m * (k + 1), "formula backward": m * (k + 1)}
                continue
            last = self.trained(name)[1]["history"][-1]
            rows[LABELS[name]] = {"forward": last["forward_per_batch"], "backward": last["backward_per_batch"],
                                  "formula forward": formula[name][0], "formula backward": formula[name][1]}
        return pd.DataFrame(rows).T

    def time_table(self, systems: list[str]) -> pd.DataFrame:
        """Training wall-clock seconds per system (summed over epochs) and the ratio to Linf AT."""
        seconds = {LABELS[n]: sum(h["seconds"] for h in self.trained(n)[1]["history"]) for n in systems if n != "vanilla"}
        if "vanilla" in systems:
            seconds[LABELS["vanilla"]] = sum(seconds[LABELS[n]] for n in SINGLE_AT)
        table = pd.DataFrame({"seconds": seconds})
        if LABELS["linf_at"] in table.index:
            table["x Linf AT"] = table["seconds"] / table.loc[LABELS["linf_at"], "seconds"]
        return table

    # -- Figures ---------------------------------------------------------------------------
    def diagnostics(self, name: str = "mat") -> pd.DataFrame:
        """Figures 1 and 4: per epoch and member, the cross-gradient ratio and the sign disagreement (long format)."""
        norms = self._recipe(name)[3]
        rows = []
        for record in self.trained(name)[1]["history"]:
            for m, (ratio, disagreement) in enumerate(zip(record["cross_gradient_ratio"], record["sign_disagreement"])):
                rows.append({"epoch": record["epoch"], "member": f"{m + 1} ({norms[m]})", "cross_gradient_ratio": ratio,
                             "sign_disagreement": disagreement})
        return pd.DataFrame(rows)

    def curves(self, systems: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Figures 2/3: robust accuracy vs PGD steps (one recording run) and vs radius, per norm and system."""
        by_steps, by_eps = [], []
        for name in tqdm(systems, desc="curves", leave=False):
            model, key = self.classifier(name)
            for norm, spec in self.p.transfer_attacks.items():
                steps = accuracy_vs_steps(model, self.x, self.y, spec, self.p.curve_steps)
                by_steps.append(steps.assign(system=LABELS[name], norm=norm))
                eps = accuracy_vs_eps(model, self.x, self.y, spec, self.p.curve_eps[norm], model_key=key, cache=self.cache)
                by_eps.append(eps.assign(system=LABELS[name], norm=norm))
        return pd.concat(by_steps, ignore_index=True), pd.concat(by_eps, ignore_index=True)


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])


def strip_norms(table: pd.DataFrame) -> pd.DataFrame:
    """Sub-model labels without their '(norm)' suffix, as the paper's tables name them."""
    rename = lambda label: label.split(" (")[0] if str(label).startswith("Sub-model") else label
    return table.rename(index=rename, columns=rename)


def transfer_for_paper(table: pd.DataFrame, ensemble_label: str) -> pd.DataFrame:
    """A transfer table's counts keyed as the references are: rows 'source sub-model', 'ensemble', 'No Attack';
    columns 'Sub-model k' and 'ensemble'."""
    counts = strip_norms(table["count"]).rename(columns={ensemble_label: "ensemble"})
    rows = {"source sub-model": counts.iloc[0], "ensemble": counts.loc[ensemble_label], "No Attack": counts.loc["No Attack"]}
    return pd.DataFrame(rows).T


def claims(table4: pd.DataFrame, transfers: dict[tuple[str, str], pd.DataFrame], passes: pd.DataFrame,
           diagnostics: pd.DataFrame) -> list[Claim]:
    """The paper's qualitative claims, checked on this run's tables."""
    unions = [r for r in table4.index if r.startswith("All ") and r != "All attacks"]
    have = lambda *names: all(n in table4.columns for n in names)

    def off_diagonal_ratio(system: str, norm: str) -> float:
        ratios = transfers[(system, norm)]["ratio %"]
        source = ratios.index[0]
        return float(ratios.loc[source].drop([source] + [c for c in ratios.columns if not c.startswith("Sub-model")]).mean())

    norms = sorted({n for _, n in transfers})
    return [
        Claim("mat_beats_vanilla_unions", "MAT beats the vanilla ensemble on every union of attacks (Table 4).",
              lambda _: all(table4.loc[u, "MAT"] > table4.loc[u, "Vanilla Ensemble"] for u in unions) if have("MAT", "Vanilla Ensemble") else None,
              lambda _: "; ".join(f"{u}: MAT {table4.loc[u, 'MAT']:.1f} vs vanilla {table4.loc[u, 'Vanilla Ensemble']:.1f}" for u in unions)),
        Claim("mat_low_transfer", "MAT's transferability ratios between sub-models are far below the vanilla ensemble's (Tables 1, 2, 9-12).",
              lambda _: all(off_diagonal_ratio("mat", n) < off_diagonal_ratio("vanilla", n) for n in norms)
                        if all(("mat", n) in transfers and ("vanilla", n) in transfers for n in norms) else None,
              lambda _: "; ".join(f"{n}: MAT {off_diagonal_ratio('mat', n):.0f}% vs vanilla {off_diagonal_ratio('vanilla', n):.0f}%" for n in norms)),
        Claim("vanilla_fails_linf", "The vanilla ensemble fails under Linf attacks: its All-Linf accuracy is far below Linf AT's (Table 4).",
              lambda _: table4.loc["All linf", "Vanilla Ensemble"] < table4.loc["All linf", "Linf AT"] - 20 if have("Vanilla Ensemble", "Linf AT") else None,
              lambda _: f"vanilla {table4.loc['All linf', 'Vanilla Ensemble']:.1f} vs Linf AT {table4.loc['All linf', 'Linf AT']:.1f}"),
        Claim("mat_costs_one_at", "MAT needs K+1 forward and K+1 backward passes per batch, like single-model AT and fewer forwards than MSD (Table 6, counted).",
              lambda _: (passes.loc["MAT", "forward"] == passes.loc["Linf AT", "forward"] and passes.loc["MAT", "backward"] == passes.loc["Linf AT", "backward"]
                         and passes.loc["MAT", "forward"] < passes.loc["MSD", "forward"]) if {"MAT", "Linf AT", "MSD"} <= set(passes.index) else None,
              lambda _: ", ".join(f"{s}: {passes.loc[s, 'forward']:.0f} fwd / {passes.loc[s, 'backward']:.0f} bwd" for s in ("Linf AT", "MSD", "MAT") if s in passes.index)),
        Claim("cross_gradients_shrink", "The cross-gradient ratio falls during training but stays above zero (Figure 1).",
              lambda _: bool(all(g.sort_values("epoch")["cross_gradient_ratio"].iloc[-1] < g.sort_values("epoch")["cross_gradient_ratio"].iloc[0]
                                 and g["cross_gradient_ratio"].min() > 0 for _, g in diagnostics.groupby("member")))
                        if diagnostics["epoch"].nunique() > 1 else None,
              lambda _: "; ".join(f"member {m}: {g.sort_values('epoch')['cross_gradient_ratio'].iloc[0]:.3f} -> {g.sort_values('epoch')['cross_gradient_ratio'].iloc[-1]:.3f}"
                                  for m, g in diagnostics.groupby("member"))),
    ]
