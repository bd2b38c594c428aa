"""Tests for advlib.report: table files, references, paper-vs-run and claims."""

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


def _claim(cid, text, cites, check, evidence=lambda t: "e", reason=lambda t: "r"):
    return report.Claim(cid, text, tuple(cites), check, evidence, reason)


def test_evaluate_claims_verdicts_and_reasons():
    tables = {"table1": pd.DataFrame({"acc": [99.0, 45.0]}, index=["clean", "pgd"])}
    claims = [
        _claim(
            "c1",
            "Clean accuracy stays above 95% (Table 1).",
            ["table1"],
            lambda t: t["table1"].loc["clean", "acc"] > 95,
            lambda t: f"clean {t['table1'].loc['clean', 'acc']:.0f}",
        ),
        _claim(
            "c2",
            "PGD accuracy stays above 90% (Table 1).",
            ["table1"],
            lambda t: t["table1"].loc["pgd", "acc"] > 90,
            reason=lambda t: f"only {t['table1'].loc['pgd', 'acc']:.0f}",
        ),
        _claim("c3", "Transfer attacks fail (Table 3).", ["table3"], lambda t: t["table3"].loc["x", "acc"] < 10),
        _claim("c4", "Only at paper scale (Table 1).", ["table1"], lambda t: None, reason=lambda t: "needs ImageNet"),
    ]
    table = report.evaluate_claims(claims, tables)
    assert list(table.columns) == ["id", "claim", "cites", "evidence", "verdict", "reason"]
    assert table["verdict"].tolist() == [
        "holds",
        "does not hold",
        "not measured at this profile",
        "not measured at this profile",
    ]
    assert table["reason"].tolist() == ["", "only 45", "r", "needs ImageNet"]
    assert table.loc[0, "evidence"] == "clean 99"
    assert table.loc[0, "cites"] == "table1"


def test_claim_reading_an_uncited_table_is_an_error():
    tables = {"table1a": pd.DataFrame({"clean": [1.0]}), "table1b": pd.DataFrame({"clean": [2.0]})}
    # the Strength in Numbers defect: the text cites Table 1b, the check reads Table 1a
    bad = _claim(
        "clean_cost",
        "Adversarial training costs clean accuracy (Table 1b).",
        ["table1b"],
        lambda t: t["table1a"]["clean"].iloc[0] < 5,
    )
    with pytest.raises(report.UncitedTable, match="table1a.*cites: table1b"):
        report.evaluate_claims([bad], tables)


def test_claim_must_read_every_table_it_cites():
    tables = {"table1a": pd.DataFrame({"clean": [1.0]}), "table2": pd.DataFrame({"clean": [2.0]})}
    lazy = _claim(
        "c", "Something (Tables 1a and 2).", ["table1a", "table2"], lambda t: t["table1a"]["clean"].iloc[0] > 0
    )
    with pytest.raises(ValueError, match="cites table2 but its check does not read it"):
        report.evaluate_claims([lazy], tables)


def test_claim_text_must_name_the_cited_artifact():
    with pytest.raises(ValueError, match="cites table1b but its text does not name them"):
        _claim("c", "Adversarial training costs clean accuracy (Table 1a).", ["table1b"], lambda t: True)
    with pytest.raises(ValueError, match="cites no table"):
        _claim("c", "x", [], lambda t: True)
    for text, name in (
        ("(Tables 1, 2, 9-12)", "table9"),
        ("(Figure 2c)", "figure2c"),
        ("(Table 1a / 1b)", "table1b"),
        ("(Tables 3 and 4)", "table4"),
    ):
        _claim("c", text, [name], lambda t: True)  # accepted
    with pytest.raises(ValueError):
        _claim("c", "(Table 11)", ["table1"], lambda t: True)


def test_evaluate_claims_numpy_bool_duplicates_and_empty_reason():
    tables = {"table1": pd.DataFrame({"a": [0.0]})}
    read = lambda t: np.bool_(t["table1"]["a"].iloc[0] > 1)
    table = report.evaluate_claims([_claim("a", "x (Table 1)", ["table1"], read)], tables)
    assert table["verdict"].tolist() == ["does not hold"]
    with pytest.raises(ValueError, match="duplicate claim ids: a"):
        report.evaluate_claims(
            [_claim("a", "x (Table 1)", ["table1"], read), _claim("a", "y (Table 1)", ["table1"], read)], tables
        )
    with pytest.raises(ValueError, match="reason is empty"):
        report.evaluate_claims([_claim("a", "x (Table 1)", ["table1"], read, reason=lambda t: " ")], tables)


def test_proportion_gap_against_the_agresti_caffo_interval():
    # 60% of 100 vs 50% of 100: p1 = 61/102, p2 = 51/102, half = 1.96 sqrt(p1 q1/102 + p2 q2/102) = 13.6 points
    text = report.proportion_gap(60.0, 50.0, 100)
    assert "gap +10.0 points" in text and "half-width 13.6 points on 100 images" in text and "inside the noise" in text
    assert "outside the noise" in report.proportion_gap(60.0, 50.0, 1000)
    assert "on 100/400 images" in report.proportion_gap(0.0, 0.0, 100, 400)
    with pytest.raises(ValueError, match="n_a=0"):
        report.proportion_gap(1.0, 2.0, 0)


def test_accuracies_compare_as_counts_so_a_tie_of_correct_images_is_a_tie():
    # 198 of 900 scored images, once through float32 noise each way: the percentages differ in the last bits
    assert 22.000000005 != 22.000000129
    assert report.correct_count(22.000000005, 900) == report.correct_count(22.000000129, 900) == 198
    assert report.compare_accuracies(22.000000129, 22.000000005, 900) == 0
    # float32 accuracies of 34 and 31 of 150 are 2.000001 points apart as floats, exactly 3 images (2.0 points) as counts
    a, b = (100 * float(np.float32(k) / np.float32(150)) for k in (34, 31))
    assert a - b > 2.0  # the float difference the old rule compared
    assert report.correct_count(a, 150) - report.correct_count(b, 150) == 3
    assert report.compare_accuracies(a, b, 150) == 1 and report.compare_accuracies(b, a, 150) == -1
    assert report.compare_accuracies(100.0, 0.0, 1) == 1
    with pytest.raises(ValueError, match="n=0"):
        report.correct_count(50.0, 0)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        report.correct_count(101.0, 10)
