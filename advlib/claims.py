"""The papers' claims as data: each claim measures one or more `Comparison`s on the run's tables, and the verdict,
evidence, interval and reason follow from them.

A comparison is a difference (left minus right, or left minus a constant) with a 95% interval from the test that fits
how it was measured: Agresti-Caffo for two accuracies on separate samples, Agresti-Min for two accuracies on the same
images (paired: only the images the two disagree on count), Wilson for one accuracy against a constant, Welch's t for
means of repeated runs, and for accuracies over training runs a t interval whose variance adds the runs' spread to
the test images' (`Comparison.runs`). Written here (not scipy.stats alone) because no library turns an interval into the three
verdicts below; scipy gives the t quantile.

Verdicts (one per comparison; a claim combines its comparisons with its quantifier):
- strict claims (left above / below right by more than the threshold): `holds` when the interval lies on the claim's
  side, `fails` when it lies on the other side (a tie included), `undecided` when it straddles;
- non-strict claims (not below / not above): refuted only by evidence: `holds` when the measured difference is on the
  claim's side (a tie of counts included), `fails` when the interval excludes the claim, `undecided` otherwise;
- equivalence claims (within a threshold): `holds` when the interval lies inside +-threshold, `fails` when it lies
  entirely outside, `undecided` otherwise;
- `not measured at this profile` when a cited result is absent, `does not transfer` when the measure states that the
  claim's premise does not hold at this scale (`DoesNotTransfer`).
An undecided comparison reports how many images would decide it at the observed effect (the interval's half-width
shrinks as 1/sqrt(n)).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

HOLDS = "holds"
FAILS = "fails"
UNDECIDED = "undecided"
NOT_MEASURED = "not measured at this profile"
DOES_NOT_TRANSFER = "does not transfer"
VERDICTS = (HOLDS, FAILS, UNDECIDED, DOES_NOT_TRANSFER, NOT_MEASURED)

Relation = Literal[">", ">=", "<", "<=", "within"]
RELATIONS: tuple[str, ...] = (">", ">=", "<", "<=", "within")
Quantifier = Literal["all", "majority"]
_Z = 1.959963984540054  # the two-sided 95% normal quantile


class DoesNotTransfer(Exception):
    """Raised by a claim's measure when the claim's premise does not hold at this scale; the message says why."""


# -- estimates and their intervals ---------------------------------------------------------------------------------
def correct_count(percent: float, n: int) -> int:
    """The whole number of correct images that an accuracy of `percent` on `n` scored images stands for.

    Comparisons count images, not float percentages, so last-bit float32 noise cannot break a tie. For an accuracy
    averaged over evaluations or seeds, `n` counts every scored image (images x evaluations x seeds)."""
    if n < 1:
        raise ValueError(f"n must be >= 1 scored images, got n={n}")
    if not -1e-6 <= percent <= 100 + 1e-6:
        raise ValueError(f"percent must be an accuracy in [0, 100], got {percent}")
    return round(percent * n / 100)


@dataclass(frozen=True)
class Runs:
    """A system's accuracy (percent) in each of its training runs, every run scored on the same `n` images.

    `spread`, if given, is the run-to-run variance of one run (points squared) with its degrees of freedom, pooled
    over comparable systems' repeats (`pooled_spread`); it replaces the system's own estimate, which two runs give
    with one degree of freedom and one run not at all. A system trained once needs it (else ValueError), so the
    assumption of a common spread is always the caller's stated choice."""

    name: str
    values: tuple[float, ...]
    n: int
    spread: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError(f"{self.name}: no training run")
        for value in self.values:
            correct_count(value, self.n)  # checks n >= 1 and each value in [0, 100]
        if self.spread is not None:
            _check_spread(self.spread, f"{self.name}: ")
        if len(self.values) == 1 and self.spread is None:
            raise ValueError(
                f"{self.name}: one training run has no run-to-run spread; give one (borrowed from repeated systems) "
                f"or compare its images with Comparison.accuracies"
            )

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def run_variance(self) -> tuple[float, float]:
        """The variance of the mean over runs (points squared) and its degrees of freedom."""
        if self.spread is not None:
            return self.spread[0] / len(self.values), self.spread[1]
        return float(np.var(self.values, ddof=1)) / len(self.values), len(self.values) - 1.0

    @property
    def image_variance(self) -> float:
        """The test images' sampling variance of the mean accuracy (points squared): every run is scored on the same
        `n` images, so averaging runs does not shrink it (one success and one failure added, as Agresti-Caffo)."""
        p = (correct_count(self.mean, self.n) + 1) / (self.n + 2)
        return 1e4 * p * (1 - p) / (self.n + 2)


def _check_spread(spread: tuple[float, float], owner: str = "") -> None:
    if spread[0] < 0 or spread[1] <= 0:
        raise ValueError(f"{owner}a spread is a variance >= 0 with degrees of freedom > 0, got {spread}")


def pooled_spread(samples: Sequence[Sequence[float]]) -> tuple[float, float]:
    """The run-to-run variance pooled over several systems' repeated runs (each about its own mean) and its degrees
    of freedom: the spread a comparable system trained once is given. KeyError when no system was repeated."""
    repeated = [np.asarray(s, dtype=float) for s in samples if len(s) >= 2]
    dof = sum(len(s) - 1 for s in repeated)
    if dof == 0:
        raise KeyError("no system was trained more than once: no run-to-run spread to measure")
    return float(sum(((s - s.mean()) ** 2).sum() for s in repeated)) / dof, float(dof)


@dataclass(frozen=True)
class Comparison:
    """One measured comparison of a claim: `left` against `right` (another measurement or a constant).

    `difference` is left minus right in the comparison's unit and [`low`, `high`] its 95% interval; `relation` and
    `threshold` state the claim about the difference (`>`: difference > threshold; `within`: |difference| <=
    threshold); `n` is the sample size the interval rests on (`sample_name` says what it counts when not images or
    runs) and `test` names the test; `fixed_share` is the share of the interval's variance that a larger `n` does
    not shrink (the test images' part of a comparison over training runs). Build one with `accuracies`, `paired`,
    `against`, `exact`, `means`, `runs` or `variances`."""

    left: str
    right: str
    left_value: float
    right_value: float
    relation: Relation
    threshold: float
    difference: float
    low: float
    high: float
    n: int
    test: str
    unit: str = "%"
    sample_name: str = ""
    fixed_share: float = 0.0

    def __post_init__(self) -> None:
        if self.relation not in RELATIONS:
            raise ValueError(f"relation {self.relation!r} is not one of {', '.join(RELATIONS)}")
        if self.relation == "within" and self.threshold < 0:
            raise ValueError(f"a 'within' threshold must be >= 0, got {self.threshold}")
        if not self.low <= self.difference <= self.high:
            raise ValueError(f"interval [{self.low}, {self.high}] does not contain the difference {self.difference}")
        if not 0 <= self.fixed_share < 1:
            raise ValueError(f"fixed_share must be in [0, 1), got {self.fixed_share}")

    # -- constructors, one per test --
    @classmethod
    def accuracies(
        cls,
        left: tuple[str, float],
        right: tuple[str, float],
        relation: Relation,
        n: int,
        n_right: int | None = None,
        threshold: float = 0.0,
    ) -> Comparison:
        """Two accuracies (percent) on separate samples of `n` and `n_right` images: Agresti-Caffo interval on the
        difference of the counts of correct images (one success and one failure added to each side). Also the
        conservative choice for two accuracies on the same images when per-image outcomes were not kept: positively
        correlated outcomes make the true paired interval narrower."""
        n_right = n if n_right is None else n_right
        k_left, k_right = correct_count(left[1], n), correct_count(right[1], n_right)
        p_left, p_right = (k_left + 1) / (n + 2), (k_right + 1) / (n_right + 2)
        half = _Z * math.sqrt(p_left * (1 - p_left) / (n + 2) + p_right * (1 - p_right) / (n_right + 2)) * 100
        difference = 100 * (k_left / n - k_right / n_right)
        return cls(
            left[0],
            right[0],
            100 * k_left / n,
            100 * k_right / n_right,
            relation,
            threshold,
            difference,
            max(difference - half, -100.0),  # a difference of two accuracies lies in [-100, 100] points
            min(difference + half, 100.0),
            min(n, n_right),
            "Agresti-Caffo",
        )

    @classmethod
    def paired(
        cls,
        left: str,
        right: str,
        left_only: int,
        right_only: int,
        n: int,
        relation: Relation,
        threshold: float = 0.0,
        both: int = 0,
    ) -> Comparison:
        """Two methods scored on the same `n` images: `left_only` images succeed under left alone, `right_only` under
        right alone (`both` under both, for the reported accuracies). Agresti-Min interval on the paired difference
        (0.5 added to each cell of the 2x2 table)."""
        if min(left_only, right_only, both) < 0 or left_only + right_only + both > n:
            raise ValueError(
                f"paired counts must be >= 0 and sum to at most n={n}: left_only={left_only}, "
                f"right_only={right_only}, both={both}"
            )
        b, c, m = left_only + 0.5, right_only + 0.5, n + 2
        centre = (b - c) / m
        half = _Z * math.sqrt(max((b + c) - (b - c) ** 2 / m, 0.0)) / m * 100
        difference = 100 * (left_only - right_only) / n
        low = max(min(difference, 100 * centre - half), -100.0)  # clamped to the feasible [-100, 100] points
        high = min(max(difference, 100 * centre + half), 100.0)
        return cls(
            left,
            right,
            100 * (left_only + both) / n,
            100 * (right_only + both) / n,
            relation,
            threshold,
            difference,
            low,
            high,
            n,
            "paired Agresti-Min",
        )

    @classmethod
    def against(cls, left: tuple[str, float], constant: float, relation: Relation, n: int) -> Comparison:
        """One accuracy (percent of `n` images) against a constant (percent): Wilson score interval."""
        k = correct_count(left[1], n)
        p = k / n
        centre = (p + _Z**2 / (2 * n)) / (1 + _Z**2 / n)
        half = _Z * math.sqrt(p * (1 - p) / n + _Z**2 / (4 * n**2)) / (1 + _Z**2 / n)
        difference = 100 * p - constant
        low = min(difference, 100 * (centre - half) - constant)
        high = max(difference, 100 * (centre + half) - constant)
        return cls(left[0], f"{constant:g}", 100 * p, constant, relation, 0.0, difference, low, high, n, "Wilson")

    @classmethod
    def exact(cls, left: tuple[str, float], right: tuple[str, float], relation: Relation, n: int) -> Comparison:
        """Two numbers that an identity ties on the same `n` images (e.g. a union of attacks can never be more
        accurate than one of its attacks): no sampling error, so the interval is the point and the verdict is exact."""
        difference = left[1] - right[1]
        return cls(left[0], right[0], left[1], right[1], relation, 0.0, difference, difference, difference, n, "exact")

    @classmethod
    def means(
        cls,
        left: tuple[str, Sequence[float]],
        right: tuple[str, Sequence[float]] | tuple[str, float],
        relation: Relation,
        threshold: float = 0.0,
        unit: str = "",
        spread: tuple[float, float] | None = None,
    ) -> Comparison:
        """The mean of repeated measurements (runs, seeds) against another sample's mean (Welch's t interval) or a
        constant (one-sample t interval). With `spread` (a variance pooled over comparable samples and its degrees
        of freedom, `pooled_spread`) both sides take that variance instead of their own: Student's t with the pooled
        degrees of freedom, which two runs a side cannot give on their own (one each)."""
        a = np.asarray(left[1], dtype=float)
        b = None if isinstance(right[1], (int, float)) else np.asarray(right[1], dtype=float)
        if spread is not None:
            _check_spread(spread)
            va, vb, dof = spread[0] / len(a), 0.0 if b is None else spread[0] / len(b), spread[1]
            test = "Student t, pooled spread"
        elif len(a) < 2 or (b is not None and len(b) < 2):
            raise ValueError(f"means need at least two values per side, got {len(a)} and {0 if b is None else len(b)}")
        else:
            va = a.var(ddof=1) / len(a)
            vb = 0.0 if b is None else b.var(ddof=1) / len(b)
            if b is None:
                dof, test = len(a) - 1.0, "t"
            else:
                welch = va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)
                dof, test = (va + vb) ** 2 / welch if va + vb > 0 else len(a) + len(b) - 2.0, "Welch t"
        right_value = float(right[1]) if b is None else float(b.mean())  # type: ignore[arg-type]
        difference = float(a.mean()) - right_value
        half = float(stats.t.ppf(0.975, dof)) * math.sqrt(va + vb)
        n = len(a) if b is None else min(len(a), len(b))
        return cls(
            left[0],
            right[0],
            float(a.mean()),
            right_value,
            relation,
            threshold,
            difference,
            difference - half,
            difference + half,
            n,
            test,
            unit,
        )

    @classmethod
    def runs(
        cls,
        left: Runs | tuple[str, Mapping[Runs, float]],
        right: Runs | tuple[str, Mapping[Runs, float]] | float,
        relation: Relation,
        threshold: float = 0.0,
    ) -> Comparison:
        """Accuracies over training runs: each side one system's mean over its runs, a linear combination of systems
        (a name and {system: coefficient}, e.g. a drop between two attack sets) or, on the right, a constant.

        The variance of the difference adds each system's run-to-run variance of its mean (coefficient squared) and
        its test images' sampling variance, which repeating the training on the same images does not shrink; the t
        quantile takes the Welch-Satterthwaite degrees of freedom of the run parts (the image parts count as
        known; systems that share one pooled spread share its degrees of freedom). So the interval says how far
        another set of training runs could move the result, which an interval on images alone does not
        (investigations/cpu_variance.md)."""
        weights: dict[str, tuple[Runs, float]] = {}
        values, names = [], []
        for sign, side in zip((1.0, -1.0), (left, right)):
            if isinstance(side, (int, float)):
                values.append(float(side))
                names.append(f"{side:g}")
                continue
            name, terms = (side.name, {side: 1.0}) if isinstance(side, Runs) else side
            values.append(sum(coefficient * system.mean for system, coefficient in terms.items()))
            names.append(name)
            for system, coefficient in terms.items():
                known, previous = weights.get(system.name, (system, 0.0))
                if known != system:
                    raise ValueError(f"two different systems are named {system.name!r}")
                weights[system.name] = (system, previous + sign * coefficient)
        # run parts that rest on one pooled spread are one estimate (their degrees of freedom are not added up)
        run_parts: dict[object, tuple[float, float]] = {}
        for system, c in weights.values():
            if c:
                key = ("pooled", system.spread) if system.spread is not None else ("own", system.name)
                part, dof = system.run_variance
                run_parts[key] = (run_parts.get(key, (0.0, dof))[0] + c**2 * part, dof)
        images = sum(c**2 * s.image_variance for s, c in weights.values() if c)
        variance = sum(v for v, _ in run_parts.values()) + images
        spread = sum(v**2 / dof for v, dof in run_parts.values() if v > 0)
        quantile = float(stats.t.ppf(0.975, variance**2 / spread)) if spread > 0 else _Z
        half = quantile * math.sqrt(variance)
        difference = values[0] - values[1]
        repeated = [len(s.values) for s, c in weights.values() if c and len(s.values) >= 2]
        borrowed = any(c and s.spread is not None for s, c in weights.values())
        constant = isinstance(right, (int, float))
        return cls(
            names[0],
            names[1],
            values[0],
            values[1],
            relation,
            threshold,
            difference,
            difference - half,
            difference + half,
            min(repeated, default=1),
            ("one-sample " if constant else "") + "t over runs" + (", pooled spread" if borrowed else ""),
            fixed_share=images / variance if variance > 0 else 0.0,
        )

    @classmethod
    def variances(
        cls, left: tuple[str, Sequence[float]], right: tuple[str, Sequence[float]], relation: Relation
    ) -> Comparison:
        """The spread of two samples of repeated runs: the log of the ratio of their variances (left over right)
        against 0, with the F distribution's 95% interval; values are reported as standard deviations."""
        a, b = np.asarray(left[1], dtype=float), np.asarray(right[1], dtype=float)
        if len(a) < 2 or len(b) < 2:
            raise ValueError(f"variances need at least two values per side, got {len(a)} and {len(b)}")
        va, vb = a.var(ddof=1), b.var(ddof=1)
        if va <= 0 or vb <= 0:
            raise ValueError(f"variances must be > 0 to compare their ratio, got {va:g} and {vb:g}")
        ratio, (d1, d2) = va / vb, (len(a) - 1, len(b) - 1)
        low, high = ratio / stats.f.ppf(0.975, d1, d2), ratio / stats.f.ppf(0.025, d1, d2)
        return cls(
            left[0],
            right[0],
            math.sqrt(va),
            math.sqrt(vb),
            relation,
            0.0,
            math.log(ratio),
            math.log(low),
            math.log(high),
            min(len(a), len(b)),
            "F (log variance ratio)",
            "",
        )

    # -- what the comparison says --
    @property
    def margin(self) -> tuple[float, float, float]:
        """How far the measurement is on the claim's side of its threshold (positive: the claim's side), with the
        interval of that margin: the quantity a budget ladder plots."""
        d, lo, hi, t = self.difference, self.low, self.high, self.threshold
        if self.relation in (">", ">="):
            return d - t, lo - t, hi - t
        if self.relation in ("<", "<="):
            return t - d, t - hi, t - lo
        nearest = 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))
        return t - abs(d), t - max(abs(lo), abs(hi)), t - nearest

    @property
    def verdict(self) -> str:
        """holds / fails / undecided, by the rules in the module docstring."""
        point, low, high = self.margin
        if self.relation in (">", "<"):
            return HOLDS if low > 0 else FAILS if high <= 0 else UNDECIDED
        if self.relation in (">=", "<="):
            return HOLDS if point >= 0 else FAILS if high < 0 else UNDECIDED
        return HOLDS if low >= 0 else FAILS if high < 0 else UNDECIDED

    @property
    def sample(self) -> str:
        """What `n` counts: `sample_name` if given (e.g. generators), else images, or runs for repeated runs."""
        if self.sample_name:
            return self.sample_name
        repeated = ("Welch t", "t", "Student t, pooled spread", "F (log variance ratio)")
        return "runs" if self.test in repeated or " over runs" in self.test else "images"

    def images_to_decide(self) -> int | None:
        """For an undecided comparison, about how many images (or runs) would decide it at the observed effect: the
        shrinking part of the interval's variance falls as 1/n until the half-width no longer reaches the boundary.
        None for a zero effect, or when the part that does not shrink (`fixed_share`) already reaches it."""
        point, low, high = self.margin
        distance = abs(point)
        if distance == 0:
            return None
        reach = (distance / ((high - low) / 2)) ** 2  # the variance share the boundary leaves room for
        if reach <= self.fixed_share:
            return None
        return max(self.n + 1, math.ceil(self.n * (1 - self.fixed_share) / (reach - self.fixed_share)))

    def describe(self) -> str:
        """`left 52.0% vs right 44.0%: +8.0 [+2.1, +13.9] points on 500 images (Agresti-Caffo; claim: ...)`."""
        if self.test.startswith("F "):
            return (
                f"std {self.left} {self.left_value:.3g} vs {self.right} {self.right_value:.3g}: variance ratio "
                f"{math.exp(self.difference):.3g} [{math.exp(self.low):.3g}, {math.exp(self.high):.3g}] on "
                f"{self.n} runs (F test; claim: ratio {self.relation} 1)"
            )
        unit = self.unit
        points = " points" if unit == "%" else ""
        right = f"{self.right} {self.right_value:.3g}{unit}" if unit != "%" else f"{self.right} {self.right_value:.1f}%"
        left = f"{self.left} {self.left_value:.3g}{unit}" if unit != "%" else f"{self.left} {self.left_value:.1f}%"
        if self.test in ("Wilson", "t") or self.test.startswith("one-sample "):
            right = f"{self.right_value:g}{unit}" if unit == "%" else f"{self.right_value:.3g}{unit}"
        digits = 1 if unit == "%" else 3
        claim = {"within": f"|difference| <= {self.threshold:g}"}.get(
            self.relation, f"difference {self.relation} {self.threshold:g}"
        )
        return (
            f"{left} vs {right}: {self.difference:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"
            f"{points} on {self.n} {self.sample} ({self.test}; claim: {claim})"
        )


# -- claims ----------------------------------------------------------------------------------------------------------
class UncitedTable(LookupError):
    """A claim's measure read a table it does not cite (a programming error, never 'not measured')."""


class CitedTables(Mapping[str, Any]):
    """The run's tables as one claim sees them: only the ones it cites; records which it read.

    A cited table this run did not produce raises KeyError (the claim is then not measured); an uncited one raises
    `UncitedTable`, so a measure cannot quietly read a table other than the one its text cites.
    """

    def __init__(self, claim_id: str, cites: Sequence[str], tables: Mapping[str, Any]):
        self._id, self._cites, self._tables = claim_id, tuple(cites), tables
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        if name not in self._cites:
            raise UncitedTable(
                f"claim {self._id!r} read table {name!r}, which it does not cite (cites: {', '.join(self._cites)})"
            )
        self.read.add(name)
        return self._tables[name]

    def __iter__(self) -> Iterator[str]:
        return (name for name in self._cites if name in self._tables)

    def __len__(self) -> int:
        return sum(1 for _ in self)


_CITATION = re.compile(r"^(table|figure)(\d+[a-z]?)$")


def _text_cites(text: str, name: str) -> bool:
    """Whether the claim's sentence names the paper artifact `name` (table1b -> 'Table 1b', 'Tables 1a, 1b', ...).

    Names that are not paper artifacts (e.g. 'diagnostics') need not appear in the text."""
    match = _CITATION.match(name)
    if match is None:
        return True
    kind, number = match.groups()
    return (
        re.search(rf"\b{kind}s?\b[^()]*?(?<![\w.-]){re.escape(number)}(?![\w])", text, flags=re.IGNORECASE) is not None
    )


Measure = Callable[[Mapping[str, Any]], "Comparison | Sequence[Comparison]"]
Note = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class Claim:
    """A claim of the paper: its sentence, the tables it cites and the comparison(s) that test it.

    `measure` gets only the cited tables and returns one `Comparison` or several; `quantifier` says how several
    combine (`all`: each must hold; `majority`: more than half). `note`, if given, adds measured context to the
    reason of a claim that does not hold (the cause the cited tables show)."""

    id: str
    text: str
    cites: tuple[str, ...]
    measure: Measure
    quantifier: Quantifier = "all"
    note: Note | None = None

    def __post_init__(self) -> None:
        if not self.cites:
            raise ValueError(f"claim {self.id!r} cites no table: name the tables its measure reads")
        missing = [name for name in self.cites if not _text_cites(self.text, name)]
        if missing:
            raise ValueError(
                f"claim {self.id!r} cites {', '.join(missing)} but its text does not name them: {self.text!r}"
            )
        if self.quantifier not in ("all", "majority"):
            raise ValueError(f"claim {self.id!r}: quantifier {self.quantifier!r} is not one of all, majority")


CLAIM_COLUMNS = ["id", "claim", "cites", "evidence", "n", "margin", "margin_low", "margin_high", "verdict", "reason"]


def combine(comparisons: Sequence[Comparison], quantifier: Quantifier = "all") -> tuple[str, Comparison]:
    """The claim's verdict from its comparisons, and the comparison that decides it (for the margin and reason).

    all: fails if any fails, holds if all hold, else undecided; the binding comparison is the smallest margin.
    majority: holds if more than half hold, fails if at least half fail, else undecided; the binding comparison is
    the median margin."""
    if not comparisons:
        raise ValueError("a claim measured no comparison")
    verdicts = [c.verdict for c in comparisons]
    by_margin = sorted(comparisons, key=lambda c: c.margin[0])
    if quantifier == "all":
        failed = [c for c in by_margin if c.verdict == FAILS]
        verdict = FAILS if failed else HOLDS if all(v == HOLDS for v in verdicts) else UNDECIDED
        binding = failed[0] if failed else next((c for c in by_margin if c.verdict == UNDECIDED), by_margin[0])
        return verdict, binding
    count = Counter(verdicts)
    half = len(comparisons) / 2
    verdict = HOLDS if count[HOLDS] > half else FAILS if count[FAILS] >= half else UNDECIDED
    return verdict, by_margin[(len(by_margin) - 1) // 2]


def _reason(verdict: str, comparisons: Sequence[Comparison], binding: Comparison) -> str:
    if verdict == HOLDS:
        return ""
    if verdict == FAILS:
        failing = sum(c.verdict == FAILS for c in comparisons)
        count = f" ({failing} of {len(comparisons)} comparisons fail)" if len(comparisons) > 1 else ""
        return f"the 95% interval excludes the claim{count}: {binding.describe()}"
    needed = binding.images_to_decide()
    if needed is not None:
        size = f"about {needed} {binding.sample} would decide it at the observed effect"
    elif binding.margin[0] == 0:
        size = "the observed effect is zero: no sample size decides it"
    else:
        size = f"more {binding.sample} alone would not decide it: the test images' error alone reaches the boundary"
    undecided = sum(c.verdict == UNDECIDED for c in comparisons)
    count = f" ({undecided} of {len(comparisons)} comparisons straddle)" if len(comparisons) > 1 else ""
    return f"the 95% interval straddles the claim's boundary{count}; {size}: {binding.describe()}"


def _evidence(comparisons: Sequence[Comparison], binding: Comparison) -> str:
    if len(comparisons) == 1:
        return binding.describe()
    held = sum(c.verdict == HOLDS for c in comparisons)
    return f"{held} of {len(comparisons)} comparisons hold; closest: {binding.describe()}"


def evaluate_claims(claims: Sequence[Claim], tables: Mapping[str, Any]) -> pd.DataFrame:
    """One row per claim: its evidence, sample size, margin with interval, verdict and reason (empty when it holds).

    Each claim sees only the tables it cites and must read every one of them (else ValueError: the measure would not
    test what its text says). A cited table that is missing, or a KeyError inside the measure, means not measured."""
    duplicates = sorted(cid for cid, count in Counter(c.id for c in claims).items() if count > 1)
    if duplicates:
        raise ValueError(f"duplicate claim ids: {', '.join(duplicates)}")
    rows = []
    for claim in claims:
        view = CitedTables(claim.id, claim.cites, tables)
        row: dict[str, Any] = {"id": claim.id, "claim": claim.text, "cites": ", ".join(claim.cites)}
        try:
            measured = claim.measure(view)
        except DoesNotTransfer as why:
            rows.append({**row, "evidence": "", "verdict": DOES_NOT_TRANSFER, "reason": str(why)})
            continue
        except KeyError as missing:
            rows.append({**row, "evidence": "", "verdict": NOT_MEASURED, "reason": f"missing result {missing}"})
            continue
        comparisons = [measured] if isinstance(measured, Comparison) else list(measured)
        if view.read != set(claim.cites):
            unread = sorted(set(claim.cites) - view.read)
            raise ValueError(f"claim {claim.id!r} cites {', '.join(unread)} but its measure does not read it")
        verdict, binding = combine(comparisons, claim.quantifier)
        reason = _reason(verdict, comparisons, binding)
        if reason and claim.note is not None:
            reason += "; " + claim.note(view)
        margin, low, high = binding.margin
        rows.append(
            {
                **row,
                "evidence": _evidence(comparisons, binding),
                "n": binding.n,
                "margin": margin,
                "margin_low": low,
                "margin_high": high,
                "verdict": verdict,
                "reason": reason,
            }
        )
    table = pd.DataFrame(rows, columns=CLAIM_COLUMNS)
    table["n"] = table["n"].astype("Int64")
    return table


def verdict_counts(table: pd.DataFrame) -> str:
    """`12 claims: 5 hold, 3 fail, 2 undecided, 1 does not transfer, 1 not measured at this profile`: the line that
    opens every notebook's claims section."""
    count = Counter(table["verdict"])
    unknown = sorted(set(count) - set(VERDICTS))
    if unknown:
        raise ValueError(f"unknown verdicts {unknown}; allowed: {', '.join(VERDICTS)}")
    words = {HOLDS: "hold", FAILS: "fail"}
    parts = [f"{count[v]} {words.get(v, v)}" for v in VERDICTS if count[v]]
    return f"{len(table)} claims: " + (", ".join(parts) if parts else "none")
