"""A cold run of every ci notebook writes the committed tables byte for byte (wall-clock timing tables excepted: they
measure the machine, not the method). `make nbval` executes each notebook once, from an empty cache, with its tables
sent to $ADVLIB_FIGURES, then runs this test: the committed tables in figures/<stem>/ci/ came from another cold run
(`make golden`), and under `make portability` from other CPU kernels, thread counts and oneDNN settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMING_TABLES = {"regroup/table6.csv", "mimo_adversarial_training/table7.csv"}


def _tables(folder: Path, stem: str) -> dict[str, bytes]:
    return {f"{stem}/{p.name}": p.read_bytes() for p in sorted((folder / stem / "ci").glob("*.csv"))}


def test_cold_ci_run_writes_the_committed_tables(ledger):
    fresh_root = os.environ.get("ADVLIB_FIGURES")
    if not fresh_root:
        pytest.skip("runs inside `make nbval`, after the notebooks wrote their tables to $ADVLIB_FIGURES")
    stems = sorted(p.parent.parent.name for p in Path(fresh_root).glob("*/ci/manifest.json"))  # finished notebooks
    assert stems, f"no notebook finished a ci run under {fresh_root}"
    fresh, committed = {}, {}
    for stem in stems:
        fresh |= _tables(Path(fresh_root), stem)
        committed |= _tables(ROOT / "figures", stem)
    assert sorted(fresh) == sorted(committed)
    differ = [name for name in fresh if name not in TIMING_TABLES and fresh[name] != committed[name]]
    assert differ == [], f"tables that differ from figures/<stem>/ci/ (re-run `make golden`?): {differ}"
    compared = len(fresh.keys() - TIMING_TABLES)
    ledger.record(
        "determinism",
        f"{len(stems)} notebooks x ci profile, cold cache: {compared} CSV tables as committed",
        "byte-identical",
    )
