"""Whether a folder can be written, asked before the work that would write there."""

from __future__ import annotations

import tempfile
from pathlib import Path


def write_problem(folder: str | Path) -> str | None:
    """Why `folder` cannot be created or written to (the OS's reason), or None: it makes the folder
    if need be, then one temporary file, removed at once."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
