"""Every notebook's `ci` profile, run twice from a cold cache, writes byte-identical CSV tables (wall-clock
timing tables excepted: they measure the machine, not the method)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMING_TABLES = {"regroup/ci/table6.csv", "mimo_adversarial_training/ci/table7.csv"}


def _run_all(home: Path) -> dict[str, bytes]:
    home.mkdir()
    for shared in ("params", "notebooks"):
        (home / shared).symlink_to(ROOT / shared, target_is_directory=True)
    (home / "pyproject.toml").write_text("")
    env = {**os.environ, "ADVLIB_HOME": str(home), "ADVLIB_CACHE": str(home / "artifacts")}
    done = subprocess.run([sys.executable, "-m", "advlib.cli", "run", "all", "--profile", "ci"], env=env,
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = home / "figures"
    return {str(p.relative_to(figures)): p.read_bytes() for p in sorted(figures.rglob("*.csv"))}


def test_every_ci_notebook_twice_gives_byte_identical_tables(tmp_path, ledger):
    first, second = _run_all(tmp_path / "first"), _run_all(tmp_path / "second")
    stems = {name.split("/")[0] for name in first}
    notebooks = {p.stem[3:] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert stems == notebooks  # every notebook wrote tables
    assert first.keys() == second.keys()
    differ = [name for name in first if name not in TIMING_TABLES and first[name] != second[name]]
    assert differ == []
    compared = len(first.keys() - TIMING_TABLES)
    ledger.record("determinism", f"{len(stems)} notebooks x ci profile twice, cold caches: {compared} CSV tables",
                  "byte-identical")
