"""The committed notebooks are nbval's golden copies: each holds the outputs of a ci-profile run in every checked
cell; the ci profiles run in float64 so that those outputs do not depend on the CPU, and `make portability` checked
the committed ones under other kernels."""

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


def test_ci_profiles_run_in_float64_on_torch_s_thread_choice():
    """What makes the checked outputs portable: float64 keeps last-bit differences between CPUs, kernels and thread
    counts far below the printed digits, so no kernel or thread count is pinned."""
    from advlib import params

    for stem in params.SCHEMAS:
        p = params.load(stem, "ci")
        assert (p.dtype, p.threads) == ("float64", None), stem


def _recipe(target: str) -> str:
    recipe = re.search(rf"^{target}: .*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert recipe, f"no make target {target}"
    return recipe.group(1)


def test_nbval_and_golden_run_from_an_empty_cache_and_nbval_compares_the_tables():
    for target in ("nbval", "golden"):
        assert "ADVLIB_CACHE=$$scratch" in _recipe(target) and "mktemp -d" in _recipe(target), target
        assert "ATEN_CPU_CAPABILITY" not in _recipe(target) and "MKL_CBWR" not in _recipe(target), target
    nbval = _recipe("nbval")
    assert "ADVLIB_FIGURES=$$scratch/tables" in nbval
    assert nbval.index("$(NOTEBOOKS)") < nbval.index("tests/reliability/test_determinism.py")  # tables exist by then


def test_committed_goldens_passed_make_portability():
    """`make portability` writes the README block with a digest of the checked cells and ci tables it checked; a
    golden re-made since then (or a failed check) fails here until the check is run again."""
    from advlib.portability import README_BEGIN, README_END, goldens_digest

    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(README_BEGIN) : readme.index(README_END)]
    assert f"goldens `{goldens_digest(ROOT)}`" in block, "the goldens changed since `make portability` checked them"
    assert "every run passed" in block and "FAILED" not in block
    for asked in ("scalar ATen", "AVX2 ATen", "AVX-512 ATen", "MKL COMPATIBLE", "MKL AVX2", "oneDNN on", "oneDNN off"):
        assert asked in block, asked
    assert "| 1 |" in block and "| 2 |" in block  # threads in force


def test_goldens_digest_follows_checked_outputs_and_tables_only(tmp_path):
    import nbformat

    from advlib.portability import goldens_digest

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "figures" / "x" / "ci").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    checked, free = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(1)"), nbformat.v4.new_code_cell("f()")
    nb.cells = [checked, free]
    path = tmp_path / "notebooks" / "00_x.ipynb"

    def digest() -> str:
        nbformat.write(nb, str(path))
        return goldens_digest(tmp_path)

    table = tmp_path / "figures" / "x" / "ci" / "t.csv"
    table.write_text("a\n1\n")
    first = digest()
    free.outputs = [nbformat.v4.new_output("stream", name="stdout", text="anything\n")]
    assert digest() == first
    checked.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    second = digest()
    assert second != first
    table.write_text("a\n2\n")
    assert digest() != second


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


@pytest.mark.parametrize("bad", ["9", "avx2", "-1"])
def test_portability_refuses_an_unknown_perturbation_before_running_anything(bad):
    from advlib.portability import main

    with pytest.raises(SystemExit, match=rf"perturbations are numbered 0\.\.3: .*; got \['{re.escape(bad)}'\]"):
        main([bad])
