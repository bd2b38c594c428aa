"""Tables (CSV, Markdown, LaTeX), paper-vs-run comparisons and the claims table of each notebook."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from advlib.files import atomic_write_bytes
from advlib.runtime import output_dir, project_root

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
NOT_MEASURED = "not measured at this profile"
KEY_SEPARATOR = " / "

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def check_name(name: str) -> str:
    """Reject output names that could escape figures/<stem>/<profile>/ or need quoting; returns the name."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in {".", ".."}:
        raise ValueError(
            f"invalid output name {name!r}: use only letters, digits, '_', '.' and '-', no path separators"
        )
    return name


def _format_cell(value: Any, floatfmt: int) -> str:
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{round(float(value), floatfmt) + 0.0:.{floatfmt}f}"  # + 0.0 turns -0.0 into 0.0
    return str(value)


def _flat_table(df: pd.DataFrame) -> tuple[pd.DataFrame, list[bool]]:
    """The index as leading columns (unless it is the default 0..n-1), column levels joined; plus which columns are numeric."""
    table = df.copy()
    if isinstance(table.columns, pd.MultiIndex):
        table.columns = [KEY_SEPARATOR.join(map(str, col)) for col in table.columns]
    if not (isinstance(table.index, pd.RangeIndex) and table.index.name is None):
        table.index = table.index.set_names(["" if n is None else n for n in table.index.names])
        table = table.reset_index(allow_duplicates=True)
    numeric = [pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype) for dtype in table.dtypes]
    return table, numeric


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def _latex_table(cells: pd.DataFrame, numeric: list[bool], caption: str | None) -> str:
    """A booktabs tabular inside a table float; cells are already formatted strings."""

    def row(values: Sequence[Any]) -> str:
        return " & ".join(_latex_escape(str(v)) for v in values) + r" \\"

    lines = [r"\begin{table}[ht]", r"\centering"]
    if caption is not None:
        lines.append(rf"\caption{{{_latex_escape(caption)}}}")
    lines += [
        r"\begin{tabular}{" + "".join("r" if n else "l" for n in numeric) + "}",
        r"\toprule",
        row(cells.columns),
        r"\midrule",
        *(row(values) for values in cells.itertuples(index=False)),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def save_table(
    df: pd.DataFrame, stem: str, profile: str, name: str, *, floatfmt: int = 2, caption: str | None = None
) -> dict[str, Path]:
    """Write `df` as <name>.csv, .md and .tex into figures/<stem>/<profile>/, floats rounded to `floatfmt` decimals.

    The same table always gives byte-identical files; the LaTeX uses booktabs rules.
    """
    check_name(name)
    table, numeric = _flat_table(df)
    cells = table.map(lambda v: _format_cell(v, floatfmt))
    csv = cells.to_csv(index=False, lineterminator="\n")
    markdown = (
        cells.to_markdown(index=False, disable_numparse=True, colalign=["right" if n else "left" for n in numeric])
        + "\n"
    )
    latex = _latex_table(cells, numeric, caption)
    out = output_dir(stem, profile)
    paths = {}
    for suffix, text in (("csv", csv), ("md", markdown), ("tex", latex)):
        paths[suffix] = atomic_write_bytes(out / f"{name}.{suffix}", text.encode("utf-8"))
    return paths


def _references_path(stem: str) -> Path:
    return project_root() / "params" / "references" / f"{stem}.yaml"


def load_references(stem: str) -> dict[str, dict[str, Any]]:
    """The paper's published numbers for `stem`: {artifact: {caption, unit, values}} from params/references/<stem>.yaml."""
    path = _references_path(stem)
    if not path.is_file():
        raise FileNotFoundError(f"no references for {stem!r}: {path} does not exist")
    refs = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(refs, dict):
        raise ValueError(f"{path}: expected a mapping of artifacts, got {type(refs).__name__}")
    for artifact, entry in refs.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("values"), dict):
            raise ValueError(
                f"{path}: artifact {artifact!r} needs a 'values' mapping ({{row: number}} or {{row: {{col: number}}}})"
            )
    return refs


def _as_float(key: str, value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"value of {key!r} must be a number, got {value!r}") from None


def _flatten(values: Mapping[Any, Any]) -> dict[str, float]:
    """{row: v} -> {"row": v}; {row: {col: v}} -> {"row / col": v}."""
    flat: dict[str, float] = {}
    for row, value in values.items():
        if isinstance(value, Mapping):
            for col, inner in value.items():
                key = f"{row}{KEY_SEPARATOR}{col}"
                flat[key] = _as_float(key, inner)
        else:
            flat[str(row)] = _as_float(str(row), value)
    return flat


def _run_to_flat(run_values: Mapping[str, float] | pd.Series | pd.DataFrame) -> dict[str, float]:
    if isinstance(run_values, pd.DataFrame):
        return _flatten({row: dict(values.items()) for row, values in run_values.iterrows()})
    if isinstance(run_values, pd.Series):
        keys = [KEY_SEPARATOR.join(map(str, k)) if isinstance(k, tuple) else str(k) for k in run_values.index]
        return {key: _as_float(key, v) for key, v in zip(keys, run_values.to_numpy())}
    return _flatten(run_values)


def paper_vs_run(stem: str, artifact: str, run_values: Mapping[str, float] | pd.Series | pd.DataFrame) -> pd.DataFrame:
    """Columns paper, run, difference (run - paper), one row per key of either side (NaN where one side lacks it).

    Nested references {row: {col: v}} become keys "row / col"; a DataFrame of run values (rows x cols) and a
    Series with a MultiIndex are keyed the same way. The artifact's caption and unit are kept in `.attrs`.
    """
    refs = load_references(stem)
    if artifact not in refs:
        raise KeyError(
            f"artifact {artifact!r} not in {_references_path(stem)}; present: {', '.join(map(str, refs)) or 'none'}"
        )
    entry = refs[artifact]
    paper = _flatten(entry["values"])
    run = _run_to_flat(run_values)
    keys = list(paper) + [key for key in run if key not in paper]
    table = pd.DataFrame(
        {"paper": [paper.get(k, math.nan) for k in keys], "run": [run.get(k, math.nan) for k in keys]},
        index=pd.Index(keys, dtype=object),
        dtype=float,
    )
    table["difference"] = table["run"] - table["paper"]
    table.attrs = {"caption": entry.get("caption"), "unit": entry.get("unit")}
    return table


class UncitedTable(LookupError):
    """A claim's check or evidence read a table it does not cite (a programming error, never 'not measured')."""


class CitedTables(Mapping[str, Any]):
    """The run's tables as one claim sees them: only the ones it cites; records which it read.

    A cited table this run did not produce raises KeyError (the claim is then not measured); an uncited one raises
    `UncitedTable`, so a check cannot quietly read a table other than the one its text cites.
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

    def __iter__(self):
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


Check = Callable[[Mapping[str, Any]], "bool | None"]
Explain = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class Claim:
    """A qualitative claim of the paper, checked on the tables it cites.

    `cites` names the run's output tables (e.g. "table1a"); `check`, `evidence` and `reason` get only those. `check`
    returns whether the claim holds (None: not measured at this profile); `evidence` gives the numbers it compared;
    `reason` explains a miss (or why it is not measured), from measurements where possible.
    """

    id: str
    text: str
    cites: tuple[str, ...]
    check: Check
    evidence: Explain
    reason: Explain

    def __post_init__(self) -> None:
        if not self.cites:
            raise ValueError(f"claim {self.id!r} cites no table: name the tables its check reads")
        missing = [name for name in self.cites if not _text_cites(self.text, name)]
        if missing:
            raise ValueError(
                f"claim {self.id!r} cites {', '.join(missing)} but its text does not name them: {self.text!r}"
            )


CLAIM_COLUMNS = ["id", "claim", "cites", "evidence", "verdict", "reason"]


def _explain(explain: Explain, view: Mapping[str, Any]) -> str:
    try:
        return explain(view)
    except KeyError as missing:
        return f"missing result {missing}"


def evaluate_claims(claims: Sequence[Claim], tables: Mapping[str, Any]) -> pd.DataFrame:
    """One row per claim: id, claim, cites, evidence, verdict (holds / does not hold / not measured), reason.

    Each claim sees only the tables it cites and must read every one of them (else ValueError: the check would not
    test what its text says). A cited table that is missing, or a KeyError inside the check, means not measured.
    A claim that does not hold, or is not measured, carries its reason; one that holds has an empty reason.
    """
    duplicates = sorted(cid for cid, count in Counter(c.id for c in claims).items() if count > 1)
    if duplicates:
        raise ValueError(f"duplicate claim ids: {', '.join(duplicates)}")
    rows = []
    for claim in claims:
        view = CitedTables(claim.id, claim.cites, tables)
        try:
            outcome = claim.check(view)
        except KeyError:
            outcome = None
        if outcome is not None and view.read != set(claim.cites):
            unread = sorted(set(claim.cites) - view.read)
            raise ValueError(f"claim {claim.id!r} cites {', '.join(unread)} but its check does not read it")
        verdict = NOT_MEASURED if outcome is None else HOLDS if bool(outcome) else DOES_NOT_HOLD
        reason = "" if verdict == HOLDS else _explain(claim.reason, view)
        if verdict != HOLDS and not reason.strip():
            raise ValueError(f"claim {claim.id!r} is {verdict!r} but its reason is empty")
        rows.append(
            {
                "id": claim.id,
                "claim": claim.text,
                "cites": ", ".join(claim.cites),
                "evidence": _explain(claim.evidence, view),
                "verdict": verdict,
                "reason": reason,
            }
        )
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def proportion_gap(a: float, b: float, n_a: int, n_b: int | None = None) -> str:
    """A measured account of the gap between two accuracies (percent) on n_a and n_b images: the difference and the
    half-width of its 95% Agresti-Caffo interval (one success and one failure added to each side), and whether the
    gap is inside it. Reasons for a missed claim use it to say whether this run's sample size resolves the ordering.
    """
    n_b = n_a if n_b is None else n_b
    if n_a < 1 or n_b < 1:
        raise ValueError(f"sample sizes must be >= 1, got n_a={n_a}, n_b={n_b}")
    half = (
        1.96
        * math.sqrt(
            sum(
                p * (1 - p) / (n + 2)
                for p, n in (((a / 100 * n_a + 1) / (n_a + 2), n_a), ((b / 100 * n_b + 1) / (n_b + 2), n_b))
            )
        )
        * 100
    )
    sizes = f"{n_a}" if n_b == n_a else f"{n_a}/{n_b}"
    verdict = "inside the noise: this sample size does not resolve it" if abs(a - b) <= half else "outside the noise"
    return f"gap {a - b:+.1f} points, 95% interval half-width {half:.1f} points on {sizes} images: {verdict}"


def correct_count(percent: float, n: int) -> int:
    """The whole number of correct images that an accuracy of `percent` on `n` scored images stands for.

    Verdicts compare these counts, not float percentages, so last-bit float32 noise cannot break a tie. For an
    accuracy averaged over evaluations or seeds, `n` counts every scored image (images x evaluations x seeds)."""
    if n < 1:
        raise ValueError(f"n must be >= 1 scored images, got n={n}")
    if not -1e-6 <= percent <= 100 + 1e-6:
        raise ValueError(f"percent must be an accuracy in [0, 100], got {percent}")
    return round(percent * n / 100)


def compare_accuracies(a: float, b: float, n: int) -> int:
    """-1, 0 or 1 as accuracy `a` is below, tied with or above `b` (percent of `n` scored images), compared as counts
    of correct images: equal counts are a tie whatever the last bits of their percentages."""
    difference = correct_count(a, n) - correct_count(b, n)
    return (difference > 0) - (difference < 0)
