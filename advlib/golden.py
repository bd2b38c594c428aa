"""Golden notebooks: drop papermill's `injected-parameters` cell from a committed notebook, so that the `parameters`
cell is the one that runs (a JupyterLab user who edits `profile` there gets that profile, not a hidden "ci")."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from .report import atomic_write

INJECTED = "injected-parameters"


def strip_injected_parameters(path: Path) -> bool:
    """Remove the injected-parameters cell of the notebook at `path` in place (atomically); True if there was one.
    The parameters papermill injected stay recorded in the notebook's `metadata.papermill.parameters`."""
    notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    cells = [c for c in notebook.cells if INJECTED not in c.get("metadata", {}).get("tags", [])]
    if len(cells) == len(notebook.cells):
        return False
    notebook.cells = cells
    atomic_write(path, lambda tmp: nbformat.write(notebook, str(tmp)))
    return True


def main(paths: list[str]) -> int:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"no such notebook: {', '.join(missing)}")
    for path in paths:
        strip_injected_parameters(Path(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
