"""The committed notebooks are nbval's golden copies: each holds the outputs of a ci-profile run in every checked
cell, and `make nbval` / `make golden` pin the CPU kernels so that those outputs do not depend on the machine."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_holds_ci_outputs(notebook):
    content = json.loads(notebook.read_text())
    cells = content["cells"]
    assert content["metadata"]["papermill"]["parameters"] == {"profile": "ci"}, f"{notebook.name} was not run on ci"
    assert not [c for c in cells if "injected-parameters" in c.get("metadata", {}).get("tags", [])], \
        f"{notebook.name} keeps papermill's injected-parameters cell: run `make golden`, which drops it"
    parameters = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(parameters) == 1 and 'profile = "ci"' in "".join(parameters[0]["source"])
    checked = [c for c in cells if c["cell_type"] == "code" and "NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
    assert checked and all(c["outputs"] for c in checked), f"{notebook.name} lacks outputs in checked cells"
    assert not any(o.get("output_type") == "error" for c in cells if c["cell_type"] == "code" for o in c["outputs"])


def test_golden_runs_and_checks_pin_the_same_kernels():
    makefile = (ROOT / "Makefile").read_text()
    pinned = re.search(r"^PINNED_KERNELS := (.+)$", makefile, re.M)
    assert pinned and {"ADVLIB_PORTABLE_KERNELS=1", "ATEN_CPU_CAPABILITY=avx2", "MKL_CBWR=COMPATIBLE"} <= set(pinned.group(1).split())
    for target in ("nbval", "golden"):
        recipe = re.search(rf"^{target}: .*\n((?:\t.*\n)+)", makefile, re.M)
        assert recipe and "$(PINNED_KERNELS)" in recipe.group(1), f"make {target} does not pin the kernels"


def test_strip_drops_only_the_injected_cell_and_keeps_the_record(tmp_path):
    import nbformat

    from advlib.golden import strip_injected_parameters

    nb = nbformat.v4.new_notebook(metadata={"papermill": {"parameters": {"profile": "ci"}}})
    nb.cells = [nbformat.v4.new_code_cell('profile = "default"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell('profile = "ci"', metadata={"tags": ["injected-parameters"]}),
                nbformat.v4.new_code_cell("print(profile)")]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, str(path))
    assert strip_injected_parameters(path) is True
    stripped = nbformat.read(str(path), as_version=4)
    assert [c.source for c in stripped.cells] == ['profile = "default"', "print(profile)"]
    assert stripped.metadata["papermill"]["parameters"] == {"profile": "ci"}
    assert strip_injected_parameters(path) is False  # nothing left to drop; the file is unchanged
    assert nbformat.read(str(path), as_version=4) == stripped
