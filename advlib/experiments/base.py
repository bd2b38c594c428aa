"""The shape every paper's experiment takes: a `Study` holds the parameters, device, cache and evaluation set, trains
through `Trained`-returning trainers under derived cache keys, and declares its output tables (`@artifact`) and the
paper's claims. A notebook cell is then `run.artifact(study, "table2")`: compute, save, pair with the paper, return."""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Protocol

import pandas as pd
import torch
from torch import Tensor

from ..cache import Cache, CacheKey, Trained, derive_key
from ..claims import Claim, evaluate_claims
from ..profiling import timed
from ..report import paper_vs_run, save_table

__all__ = ["ArtifactSpec", "MissingResult", "Study", "Trained", "artifact"]


@dataclass(frozen=True)
class ArtifactSpec:
    """A table a study produces: the method that computes it, the paper's numbers it is paired with (`reference`: an
    entry of params/references/<stem>.yaml, matched by `pair(table)` -> the run's values), a caption and the decimals
    its files keep."""

    name: str
    method: str
    caption: str
    reference: str | None = None
    pair: Callable[[pd.DataFrame], Any] | None = None
    floatfmt: int = 2


def artifact(
    name: str,
    caption: str,
    *,
    reference: str | None = None,
    pair: Callable[[pd.DataFrame], Any] | None = None,
    floatfmt: int = 2,
) -> Callable[[Callable[..., pd.DataFrame]], Callable[..., pd.DataFrame]]:
    """Declare a `Study` method (taking only self) as the producer of the output table `name`. With `pair`, the
    table is paired with the paper's `reference` entry (default: `name`)."""

    def declare(method: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
        ref = (reference or name) if pair is not None else None
        method.__artifact__ = ArtifactSpec(name, method.__name__, caption, ref, pair, floatfmt)  # type: ignore[attr-defined]
        return method

    return declare


class MissingResult(LookupError):
    """A table that the paper-vs-run summary or a claim needs, which this run has not produced."""


class Out(Protocol):
    """Where a study saves its tables: a `runtime.Run` (its notebook's stem and profile)."""

    stem: str
    profile: str


class Study:
    """Base of every paper's experiment: parameters `p`, `device`, `cache`, the evaluation set, the trained models
    (each a `Trained` under a key derived by `key`), the declared artifacts and the claims.

    `results` and `references` hold every table this study has published and its pairing with the paper, so the
    paper-vs-run summary and the claims read what the run produced: a table they need and the run lacks is an error.
    """

    stem: ClassVar[str]
    artifacts: ClassVar[dict[str, ArtifactSpec]] = {}
    #: the parameters that set the run's training budget (dotted keys of whole numbers: epochs, training images, the
    #: steps of attacks used in training), which `advlib ladder` scales to 1/4, 1/2 and 1 of the profile's values;
    #: the evaluation (test images, evaluation attacks, repeats) stays fixed, so each rung's margins are comparable
    budget: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = {}
        for klass in reversed(cls.__mro__):  # a subclass's declaration of a name replaces its base's
            for value in vars(klass).values():
                spec = getattr(value, "__artifact__", None)
                if isinstance(spec, ArtifactSpec):
                    declared[spec.name] = spec
        cls.artifacts = declared

    def __init__(self, p: Any, device: torch.device | str = "cpu", cache: Cache | None = None) -> None:
        self.p = p
        self.device = torch.device(device)
        self.cache = cache or Cache()
        self.results: dict[str, pd.DataFrame] = {}
        self.references: dict[str, pd.DataFrame] = {}

    # -- parameters and training ---------------------------------------------------------------
    @cached_property
    def evaluation_set(self) -> tuple[Tensor, Tensor]:
        """The images and labels the study evaluates on; each paper names its own (a split, a subset, a seed)."""
        raise NotImplementedError(f"{type(self).__name__} does not name its evaluation set")

    def key(self, kind: str, **parts: Any) -> CacheKey:
        """The cache key of a `kind` artifact from what determines it (parameter blocks, upstream `Trained`s, seeds)."""
        return derive_key(kind, **parts)

    # -- artifacts -----------------------------------------------------------------------------
    def _spec(self, name: str) -> ArtifactSpec:
        if name not in self.artifacts:
            raise KeyError(
                f"{type(self).__name__} declares no artifact {name!r}; declared: {', '.join(self.artifacts)}"
            )
        return self.artifacts[name]

    def publish(self, name: str, out: Out) -> pd.DataFrame:
        """Compute the declared artifact `name`, save it beside `out`'s outputs (CSV, Markdown, LaTeX), pair it with the
        paper's numbers when it has a reference, and return it."""
        spec = self._spec(name)
        with timed("table", name):
            table = getattr(self, spec.method)()
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"artifact {name!r} ({spec.method}) returned {type(table).__name__}, not a DataFrame")
        save_table(table, out.stem, out.profile, name, floatfmt=spec.floatfmt, caption=spec.caption)
        self.results[name] = table
        if spec.pair is not None and spec.reference is not None:
            self.references[name] = paper_vs_run(self.stem, spec.reference, spec.pair(table))
        return table

    def result(self, name: str) -> pd.DataFrame:
        """A table this run has published (MissingResult if it has not)."""
        if name not in self.results:
            raise MissingResult(
                f"{name!r} has not been produced in this run (produced: {', '.join(self.results) or 'none'}); "
                f"run its cell first"
            )
        return self.results[name]

    @artifact("paper_vs_run", "Every published number beside this run's, per artifact.")
    def paper_vs_run(self) -> pd.DataFrame:
        """The pairings of every published artifact with the paper, in the order the run produced them."""
        if not self.references:
            raise MissingResult("no artifact paired with the paper has been produced in this run")
        return pd.concat(self.references, names=["artifact", "row"])

    # -- claims --------------------------------------------------------------------------------
    def claims(self) -> list[Claim]:
        """The paper's qualitative claims, each checked on the tables it cites."""
        raise NotImplementedError(f"{type(self).__name__} declares no claims")

    def claim_tables(self) -> Mapping[str, Any]:
        """The tables the claims may cite: every published result."""
        return self.results

    def producible(self) -> Container[str] | None:
        """The cited tables this profile can produce (None: all of them); a claim citing one it cannot (a system the
        profile leaves out) is not measured, while one it can but this run has not produced is a MissingResult."""
        return None

    @artifact("claims", "The paper's claims, each with the run's evidence, verdict and, for a miss, its reason.")
    def claims_table(self) -> pd.DataFrame:
        """Every claim evaluated on the tables it cites; a cited table this run should have produced and has not is a
        MissingResult."""
        claims = self.claims()
        tables = self.claim_tables()
        can = self.producible()
        cited = {name for claim in claims for name in claim.cites}
        missing = sorted(name for name in cited if name not in tables and (can is None or name in can))
        if missing:
            raise MissingResult(
                f"the claims cite {', '.join(missing)}, which this run has not produced "
                f"(produced: {', '.join(tables) or 'none'})"
            )
        return evaluate_claims(claims, tables)
