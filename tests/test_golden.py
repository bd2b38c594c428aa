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
    assert not [c for c in cells if "injected-parameters" in c.get("metadata", {}).get("tags", [])], (
        f"{notebook.name} keeps papermill's injected-parameters cell: run `make golden`, which drops it"
    )
    parameters = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(parameters) == 1 and 'profile = "ci"' in "".join(parameters[0]["source"])
    checked = [c for c in cells if c["cell_type"] == "code" and "NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
    assert checked and all(c["outputs"] for c in checked), f"{notebook.name} lacks outputs in checked cells"
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c["outputs"]]
    assert not any(o.get("output_type") == "error" for o in outputs)
    stderr = "".join("".join(o["text"]) for o in outputs if o.get("name") == "stderr")
    assert "[advlib] cache:" not in stderr, f"{notebook.name} keeps cache notices: run `make golden`, which drops them"
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), (
        f"{notebook.name} keeps frozen progress bars: run `make golden`, which drops them"
    )


def test_golden_runs_and_checks_pin_the_same_kernels():
    makefile = (ROOT / "Makefile").read_text()
    pinned = re.search(r"^PINNED_KERNELS := (.+)$", makefile, re.M)
    assert pinned and {"ADVLIB_PORTABLE_KERNELS=1", "ATEN_CPU_CAPABILITY=avx2", "MKL_CBWR=COMPATIBLE"} <= set(
        pinned.group(1).split()
    )
    for target in ("nbval", "golden"):
        recipe = re.search(rf"^{target}: .*\n((?:\t.*\n)+)", makefile, re.M)
        assert recipe and "$(PINNED_KERNELS)" in recipe.group(1), f"make {target} does not pin the kernels"


def test_clean_drops_only_the_injected_cell_and_keeps_the_record(tmp_path):
    import nbformat

    from advlib.golden import clean_notebook

    nb = nbformat.v4.new_notebook(metadata={"papermill": {"parameters": {"profile": "ci"}}})
    nb.cells = [
        nbformat.v4.new_code_cell('profile = "default"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('profile = "ci"', metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(profile)"),
    ]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, str(path))
    assert clean_notebook(path) is True
    stripped = nbformat.read(str(path), as_version=4)
    assert [c.source for c in stripped.cells] == ['profile = "default"', "print(profile)"]
    assert stripped.metadata["papermill"]["parameters"] == {"profile": "ci"}
    assert clean_notebook(path) is False  # nothing left to drop; the file is unchanged
    assert nbformat.read(str(path), as_version=4) == stripped


def test_clean_drops_cache_notices_and_progress_bars_but_keeps_other_output(tmp_path):
    import nbformat

    from advlib.golden import clean_notebook

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("run()")
    cell.outputs = [
        nbformat.v4.new_output(
            "stream",
            name="stderr",
            text="[advlib] cache: loaded lenet5 (model/abc)\n[advlib] VGG: 8 voting layers, k = 1\n",
        ),
        nbformat.v4.new_output(
            "stream", name="stderr", text="[advlib] cache: building adversarials fgsm@0.2 (adversarial/def)\n"
        ),
        nbformat.v4.new_output(
            "display_data",
            data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                "text/plain": "attacks:   0%|          | 0/6",
            },
        ),
        nbformat.v4.new_output("stream", name="stdout", text="accuracy 97.0%\n"),
    ]
    nb.cells = [cell]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, str(path))
    assert clean_notebook(path) is True
    outputs = nbformat.read(str(path), as_version=4).cells[0].outputs
    assert [(o.output_type, o.get("name"), o.get("text")) for o in outputs] == [
        ("stream", "stderr", "[advlib] VGG: 8 voting layers, k = 1\n"),
        ("stream", "stdout", "accuracy 97.0%\n"),
    ]
