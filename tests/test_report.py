"""Tests for advlib.report: table files, references and paper-vs-run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from advlib import report


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLIB_HOME", str(tmp_path))
    (tmp_path / "params" / "references").mkdir(parents=True)
    return tmp_path


def write_refs(home, stem: str, text: str) -> None:
    (home / "params" / "references" / f"{stem}.yaml").write_text(text)


TABLE = pd.DataFrame(
    {"accuracy": [97.4567, 93.5, -0.001], "queries": [10, 200, 3000], "note": ["a_b", "x&y", "50%"]},
    index=pd.Index(["FGSM", "PGD", "CW"], name="attack"),
)


def test_save_table_writes_csv_md_tex_rounded(home):
    paths = report.save_table(TABLE, "demo", "ci", "table2", floatfmt=2, caption="Robust accuracy (%)")
    out = home / "runs" / "demo" / "ci"  # no Run made and not published
    assert paths == {"csv": out / "table2.csv", "md": out / "table2.md", "tex": out / "table2.tex"}
    back = pd.read_csv(paths["csv"], index_col="attack")
    assert back["accuracy"].tolist() == [97.46, 93.5, 0.0]
    assert back["queries"].tolist() == [10, 200, 3000]
    csv = paths["csv"].read_bytes()
    assert b"\r" not in csv and b"97.46" in csv and b"-0.00" not in csv
    md = paths["md"].read_text()
    assert "| attack" in md and "97.46" in md and "97.4567" not in md
    tex = paths["tex"].read_text()
    assert r"\caption{Robust accuracy (\%)}" in tex
    assert r"\begin{tabular}{lrrl}" in tex
    assert r"a\_b" in tex and r"x\&y" in tex and "97.46" in tex and "97.4567" not in tex
    assert not list(out.glob("*.tmp"))


def test_save_table_is_byte_identical(home):
    first = {k: p.read_bytes() for k, p in report.save_table(TABLE, "demo", "ci", "t").items()}
    second = {k: p.read_bytes() for k, p in report.save_table(TABLE.copy(), "demo", "ci", "t").items()}
    assert first == second


def test_save_table_default_index_dropped(home):
    df = pd.DataFrame({"eps": [0.1, 0.3], "acc": [0.91234, np.nan]})
    paths = report.save_table(df, "demo", "ci", "curve", floatfmt=3)
    assert paths["csv"].read_text() == "eps,acc\n0.100,0.912\n0.300,\n"


@pytest.mark.parametrize("bad", ["../x", "a/b", "a\\b", "", "..", "tab le", "t*"])
def test_save_table_rejects_bad_name(home, bad):
    with pytest.raises(ValueError, match="invalid output name"):
        report.save_table(TABLE, "demo", "ci", bad)


def test_load_references_missing_file(home):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        report.load_references("nope")


REFS = """
table2:
  caption: Accuracy under attack
  unit: percent
  values: {FGSM: 97.5, PGD: 93.5, DeepFool: 90.0}
table3:
  caption: Per-model accuracy
  unit: percent
  values:
    A: {clean: 99.0, pgd: 80.0}
    B: {clean: 98.0}
"""


def test_paper_vs_run_difference_and_missing_rows(home):
    write_refs(home, "demo", REFS)
    table = report.paper_vs_run("demo", "table2", {"FGSM": 96.0, "PGD": 95.25, "SPSA": 50.0})
    assert list(table.columns) == ["paper", "run", "difference"]
    assert list(table.index) == ["FGSM", "PGD", "DeepFool", "SPSA"]
    assert table.loc["FGSM", "difference"] == pytest.approx(-1.5)
    assert table.loc["PGD", "difference"] == pytest.approx(1.75)
    assert math.isnan(table.loc["DeepFool", "run"]) and math.isnan(table.loc["DeepFool", "difference"])
    assert math.isnan(table.loc["SPSA", "paper"]) and table.loc["SPSA", "run"] == 50.0
    assert table.attrs == {"caption": "Accuracy under attack", "unit": "percent"}


def test_paper_vs_run_series_input(home):
    write_refs(home, "demo", REFS)
    table = report.paper_vs_run("demo", "table2", pd.Series({"FGSM": 97.5, "PGD": 90.0, "DeepFool": 91.0}))
    assert table["difference"].tolist() == pytest.approx([0.0, -3.5, 1.0])


def test_paper_vs_run_nested_with_dataframe(home):
    write_refs(home, "demo", REFS)
    run = pd.DataFrame({"clean": [98.5, 97.0], "pgd": [82.0, 60.0]}, index=["A", "B"])
    table = report.paper_vs_run("demo", "table3", run)
    assert list(table.index) == ["A / clean", "A / pgd", "B / clean", "B / pgd"]
    assert table["difference"].iloc[:3].tolist() == pytest.approx([-0.5, 2.0, -1.0])
    assert math.isnan(table.loc["B / pgd", "paper"])
    multi = pd.Series([98.5], index=pd.MultiIndex.from_tuples([("A", "clean")]))
    assert report.paper_vs_run("demo", "table3", multi).loc["A / clean", "difference"] == pytest.approx(-0.5)


def test_paper_vs_run_unknown_artifact_lists_present(home):
    write_refs(home, "demo", REFS)
    with pytest.raises(KeyError, match="table2, table3"):
        report.paper_vs_run("demo", "table9", {})
