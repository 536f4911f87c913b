"""Folders and files written whole: asked whether they can be written, before the work; copied or
written whole, or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from qa_lib.errors import naming_full_disk


def write_problem(folder: str | Path, keep: bool = True) -> str | None:
    """Why `folder` cannot be created or written to (the OS's reason), or None: it makes the folder
    if need be, then one temporary file, removed at once. With `keep=False` the folders it made are
    removed again (those still empty), so a check leaves nothing behind."""
    folder = Path(folder)
    made = next((p for p in (*reversed(folder.parents), folder) if not p.exists()), None)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        if not keep and made is not None:
            _remove_empty(folder, made)
    return None


def _remove_empty(folder: Path, top: Path) -> None:
    """Remove `folder` and its parents up to `top`, stopping at the first that is not empty."""
    for path in (folder, *folder.parents):
        try:
            path.rmdir()
        except OSError:
            return
        if path == top:
            return


def copy_whole(source: Path, dest: Path, where: str, ignore=None) -> None:
    """Copy the folder `source` to the new folder `dest`, or leave no `dest` at all: a partial copy
    would only eat the space a retry needs. A full disk is one `StorageError` naming `where`."""
    try:
        with naming_full_disk(where):
            shutil.copytree(source, dest, ignore=ignore)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def write_text_whole(path: str | Path, text: str, where: str | None = None) -> None:
    """`path` holds all of `text` (UTF-8), or is left as it was: the text goes to a new file beside
    it, flushed to disk, then renamed over it, so a reader (another worker polling champion.json, a
    script reading answers) never sees half a file, and a failure leaves no stray file behind. The
    file gets the permissions a plain write would (the umask's); `tempfile` would make it owner-only.
    A full disk is one `StorageError` naming `where` (default: the path)."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with naming_full_disk(where or str(path)):
            with open(tmp, "x", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
