"""Every notebook's `ci` profile, run twice from a cold cache, writes byte-identical CSV tables (wall-clock
timing tables excepted: they measure the machine, not the method)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMING_TABLES = {"regroup/table6.csv", "mimo_adversarial_training/table7.csv"}


def _run_all(home: Path) -> dict[str, bytes]:
    home.mkdir()
    for shared in ("params", "notebooks"):
        (home / shared).symlink_to(ROOT / shared, target_is_directory=True)
    (home / "pyproject.toml").write_text("")
    env = {**os.environ, "ADVLIB_HOME": str(home), "ADVLIB_CACHE": str(home / "artifacts")}
    done = subprocess.run(
        [sys.executable, "-m", "advlib.cli", "run", "all", "--profile", "ci"],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (home / "figures").exists()  # unpublished runs leave the committed outputs alone
    runs = sorted((home / "runs").glob("*/ci-*/*.csv"))  # runs/<stem>/ci-<digest>/<table>.csv
    return {f"{p.parent.parent.name}/{p.name}": p.read_bytes() for p in runs}


def test_every_ci_notebook_twice_gives_byte_identical_tables(tmp_path, ledger):
    first, second = _run_all(tmp_path / "first"), _run_all(tmp_path / "second")
    stems = {name.split("/")[0] for name in first}
    notebooks = {p.stem[3:] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert stems == notebooks  # every notebook wrote tables
    assert first.keys() == second.keys()
    differ = [name for name in first if name not in TIMING_TABLES and first[name] != second[name]]
    assert differ == []
    compared = len(first.keys() - TIMING_TABLES)
    ledger.record(
        "determinism",
        f"{len(stems)} notebooks x ci profile twice, cold caches: {compared} CSV tables",
        "byte-identical",
    )
