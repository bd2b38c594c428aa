"""The per-CPU-vendor golden copies nbval checks (notebooks/golden/<vendor>/) hold exactly the current notebooks'
code cells, so no vendor is checked against stale code, and each copy carries the ci profile's outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
VENDORS = sorted(p for p in (NOTEBOOKS / "golden").iterdir() if p.is_dir())


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def test_there_are_golden_copies():
    assert {v.name for v in VENDORS} >= {"GenuineIntel", "AuthenticAMD"}


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda p: p.name)
def test_golden_copies_run_the_current_code_cells(vendor):
    current = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert sorted(p.name for p in vendor.glob("*.ipynb")) == [p.name for p in current]
    for notebook in current:
        golden = _cells(vendor / notebook.name)
        code = [c["source"] for c in _cells(notebook) if c["cell_type"] == "code"]
        assert [c["source"] for c in golden if c["cell_type"] == "code"] == code, f"{vendor.name}/{notebook.name} is stale"
        checked = [c for c in golden if c["cell_type"] == "code" and "NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
        assert checked and all(c["outputs"] for c in checked), f"{vendor.name}/{notebook.name} lacks checked outputs"
        parameters = [c for c in golden if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
        assert parameters and 'profile = "ci"' in "".join(parameters[0]["source"])
