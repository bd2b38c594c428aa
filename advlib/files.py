"""Atomic file writes: every file advlib writes (tables, figures, manifests, checkpoints, sweep records, the human
study's files) is filled under a temporary name beside its target and renamed over it, so a reader, a crash or a full
disk never leaves half a file behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Let `write` fill a temp file beside `path` (its return value is ignored), then rename it over `path`; on any
    failure the temp file is removed and `path` keeps its previous content."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """`atomic_write` of a text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """`atomic_write` of a binary file."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))
