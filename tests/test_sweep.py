"""Sweeps: grid parsing and planning, a 2x2 quickstart sweep on the local pool and on a Dask LocalCluster giving
identical gathered tables, and a failed point reported then completed by --resume."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from advlib import sweep as sweep_mod
from advlib.cli import main as cli
from advlib.params import ParamsError

ROOT = Path(__file__).resolve().parents[1]
GRID = ["n_eval=32,48", "attacks.0.eps=0.1,0.2"]


def test_grid_values_are_yaml_and_lists_survive_commas():
    grid = sweep_mod.parse_grid(
        ["attacks.0.eps=0.1,0.2", "train.model=lenet5,mlp1200", "eps_curve.eps=[0.1,0.2],[0.3]"]
    )
    assert grid == {
        "attacks.0.eps": [0.1, 0.2],
        "train.model": ["lenet5", "mlp1200"],
        "eps_curve.eps": [[0.1, 0.2], [0.3]],
    }
    with pytest.raises(ValueError, match="'eps' is not of the form key=v1,v2"):
        sweep_mod.parse_grid(["eps"])
    with pytest.raises(ValueError, match="given twice"):
        sweep_mod.parse_grid(["seed=1", "seed=2"])


def test_plan_expands_validates_and_names_points(project):
    (project / "params").rmdir()
    (project / "params").symlink_to(ROOT / "params", target_is_directory=True)
    planned = sweep_mod.plan("quickstart", "ci", sweep_mod.parse_grid(GRID), seeds=[0, 1])
    assert len(planned.points) == 8 and len({p.name for p in planned.points}) == 8
    assert planned.points[0].values == {"n_eval": 32, "attacks.0.eps": 0.1, "seed": 0}
    assert planned.sweep_id == sweep_mod.plan("quickstart", "ci", sweep_mod.parse_grid(GRID), seeds=[0, 1]).sweep_id
    with pytest.raises(ParamsError, match="n_eval"):  # a bad point stops the sweep before anything runs
        sweep_mod.plan("quickstart", "ci", {"n_eval": [32, "many"]})
    with pytest.raises(ValueError, match="at least one"):
        sweep_mod.plan("quickstart", "ci", {})


def _home(path: Path, cache: Path, monkeypatch) -> Path:
    path.mkdir()
    for shared in ("params", "notebooks"):
        (path / shared).symlink_to(ROOT / shared, target_is_directory=True)
    (path / "pyproject.toml").write_text("")
    monkeypatch.setenv("ADVLIB_HOME", str(path))
    monkeypatch.setenv("ADVLIB_CACHE", str(cache))
    return path


def test_local_and_dask_sweeps_agree_and_resume_completes_a_failed_point(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "shared-cache"
    _home(tmp_path / "local", cache, monkeypatch)
    planned = sweep_mod.plan("quickstart", "ci", sweep_mod.parse_grid(GRID))
    broken = planned.points[1]
    Path(broken.figures).parent.mkdir(parents=True)
    Path(broken.figures).write_text("a file where the point's figures folder must go")  # the point will fail

    args = ["sweep", "quickstart", "--profile", "ci", *(a for g in GRID for a in ("--grid", g)), "--workers", "2"]
    assert cli(args) == 1
    out = capsys.readouterr().out
    failed = Path(broken.notebook).with_name(Path(broken.notebook).stem + ".failed.ipynb")
    assert "3 of 4 points ok" in out and f"FAILED {broken.name}: {failed}" in out and "--resume" in out
    assert failed.is_file() and not Path(broken.notebook).exists()  # the partly executed notebook is kept apart
    summary = pd.read_csv(planned.folder / "summary.csv")
    assert summary.set_index("point").loc[broken.name, "status"] == "failed"
    assert (
        "NotADirectoryError" in summary.set_index("point").loc[broken.name, "error"]
        or "FileExistsError" in summary.set_index("point").loc[broken.name, "error"]
    )

    Path(broken.figures).unlink()
    untouched = {p.name: Path(p.notebook).stat().st_mtime_ns for p in planned.points if p.name != broken.name}
    assert cli([*args, "--resume", "--plot", "attack_suite.accuracy:attacks.0.eps"]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 points ok" in out and "plot:" in out
    assert {p.name: Path(p.notebook).stat().st_mtime_ns for p in planned.points if p.name != broken.name} == untouched
    local = pd.read_csv(planned.folder / "results.csv")
    assert (
        set(local.columns[:2]) == {"n_eval", "attacks.0.eps"} and len(local.groupby(["n_eval", "attacks.0.eps"])) == 4
    )

    _home(tmp_path / "dask", cache, monkeypatch)
    assert cli([*args, "--executor", "dask"]) == 0
    dask_planned = sweep_mod.plan("quickstart", "ci", sweep_mod.parse_grid(GRID))
    pd.testing.assert_frame_equal(pd.read_csv(dask_planned.folder / "results.csv"), local)
