"""Golden notebooks: clean a ci run's executed notebook before it is committed. Drops papermill's
`injected-parameters` cell (so the `parameters` cell is the one that runs in JupyterLab), the cache notices (they
say whether this machine had a result cached, not what the run found) and the progress bars (a widget's saved text
is frozen at 0%). nbval checks only the cells marked NBVAL_CHECK_OUTPUT, which print results, so none of this is
compared."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import nbformat

from .files import atomic_write

INJECTED = "injected-parameters"
WIDGET = "application/vnd.jupyter.widget-view+json"
CACHE_NOTICE = re.compile(r"^\[advlib\] cache: .*\n?", re.M)


def _kept_output(output: Any) -> Any | None:
    """The output without cache notices, or None when nothing else is left in it (or it is a progress widget)."""
    if output.get("output_type") == "display_data" and WIDGET in output.get("data", {}):
        return None
    if output.get("output_type") == "stream" and output.get("name") == "stderr":
        text = CACHE_NOTICE.sub("", output["text"] if isinstance(output["text"], str) else "".join(output["text"]))
        if not text:
            return None
        output["text"] = text
    return output


def clean_notebook(path: Path) -> bool:
    """Clean the notebook at `path` in place (atomically); True if anything changed. The parameters papermill
    injected stay recorded in the notebook's `metadata.papermill.parameters`."""
    notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    before = nbformat.writes(notebook)
    notebook.cells = [c for c in notebook.cells if INJECTED not in c.get("metadata", {}).get("tags", [])]
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [kept for kept in map(_kept_output, cell.outputs) if kept is not None]
    if nbformat.writes(notebook) == before:
        return False
    atomic_write(path, lambda tmp: nbformat.write(notebook, str(tmp)))
    return True


def main(paths: list[str]) -> int:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"no such notebook: {', '.join(missing)}")
    for path in paths:
        clean_notebook(Path(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
