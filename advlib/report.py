"""Tables (CSV, Markdown, LaTeX) and paper-vs-run comparisons; the claims live in `advlib.claims`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from advlib.files import atomic_write_bytes
from advlib.runtime import output_dir, project_root

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
