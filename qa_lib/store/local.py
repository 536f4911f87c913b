"""The embedded default store: a local folder, `<root>/<stage>/<key>/`, complete once `_COMPLETE` exists.

A stage is written to a temporary sibling folder and renamed into place in one step, so a reader
never sees half of one. Training holds an OS file lock (freed by the kernel if its holder dies),
and checkpoints live in the store's work folder, where a rerun finds them.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from qa_lib.errors import naming_full_disk
from qa_lib.folders import write_text_whole
from qa_lib.store.base import RESERVED, Entry, Lease


class LocalStore:
    remote = False

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.location = str(self.root)
        self.downloaded = 0  # bytes fetched from elsewhere: none, for a local folder

    def check(self) -> None:
        """Fail early, in one line, on a folder this process cannot create or write to. Leaves no
        folder behind (a dry run says nothing was run; the first stage stored creates it)."""
        from qa_lib.errors import ConfigError
        from qa_lib.folders import write_problem

        if problem := write_problem(self.root, keep=False):
            raise ConfigError(f"store {self.location}: cannot write there: {problem}")

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def uri(self, stage: str, key: str) -> str:
        return str(self.path(stage, key))

    def has(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / "_COMPLETE").exists()

    def fetch(self, stage: str, key: str) -> Path:
        return self.path(stage, key)

    @contextmanager
    def writing(self, stage: str, key: str) -> Iterator[Path]:
        """Yield a temporary folder; on success it becomes the stage folder in one rename."""
        final = self.path(stage, key)
        tmp = final.parent / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir(parents=True)
        try:
            with naming_full_disk(f"store {self.location}"):
                yield tmp
                (tmp / "_COMPLETE").write_text("")
            # Same key, same content: if a concurrent run finished first, keep its folder (a
            # reader may be using it) and drop ours.
            if not (final / "_COMPLETE").exists():
                if final.exists():  # an interrupted attempt
                    shutil.rmtree(final, ignore_errors=True)
                try:
                    os.replace(tmp, final)
                except OSError:
                    if not (final / "_COMPLETE").exists():
                        raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    # -- resumable work ------------------------------------------------------------------------
    def work_dir(self, stage: str, key: str) -> Path:
        """A stable scratch folder for resumable work (training checkpoints) under a key."""
        path = self.root / "work" / stage / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def restore_checkpoint(self, stage: str, key: str, local_dir: Path) -> str | None:
        return None  # the checkpoints already live in the store's work folder

    def save_checkpoint(self, stage: str, key: str, checkpoint: Path) -> None:
        pass

    def clear_checkpoints(self, stage: str, key: str) -> None:
        shutil.rmtree(self.work_dir(stage, key) / "checkpoints", ignore_errors=True)

    @contextmanager
    def lease(self, stage: str, key: str) -> Iterator[Lease]:
        """Exclusive work on one key within this machine; a second holder waits."""
        path = self._lock_path(stage, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield Lease(description=f"file lock {path}")
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _lock_path(self, stage: str, key: str) -> Path:
        return self.root / "locks" / f"{stage}-{key}.lock"

    # -- housekeeping --------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        out = []
        for marker in sorted(self.root.glob("*/*/_COMPLETE")):
            folder = marker.parent
            if folder.parent.name in RESERVED:
                continue
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            out.append(Entry(folder.parent.name, folder.name, size, marker.stat().st_mtime))
        return out

    def orphans(self, before: float) -> list[Entry]:
        """Staging folders of writers that died before their rename, last changed before `before`."""
        out = []
        for tmp in sorted(self.root.glob("*/.*.tmp")):
            if tmp.parent.name in RESERVED or not tmp.is_dir():
                continue
            files = [p for p in tmp.rglob("*") if p.is_file()]
            newest = max([tmp.stat().st_mtime, *(p.stat().st_mtime for p in files)])
            if newest < before:
                out.append(Entry(tmp.parent.name, tmp.name, sum(p.stat().st_size for p in files), newest))
        return out

    def remove_orphan(self, entry: Entry) -> None:
        shutil.rmtree(self.root / entry.stage / entry.key, ignore_errors=True)

    def remove(self, stage: str, key: str) -> None:
        folder = self.path(stage, key)
        (folder / "_COMPLETE").unlink(missing_ok=True)  # readers stop trusting it first
        shutil.rmtree(folder, ignore_errors=True)

    def leased(self) -> set[tuple[str, str]]:
        """Keys whose lock some process holds right now (a training in progress)."""
        held = set()
        for path in self.root.glob("locks/*.lock"):
            with open(path, "a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(handle, fcntl.LOCK_UN)
                except BlockingIOError:
                    stage, _, key = path.stem.partition("-")
                    held.add((stage, key))
        return held

    def pin(self, name: str, keys: list[tuple[str, str]]) -> None:
        refs = self.root / "refs"
        refs.mkdir(parents=True, exist_ok=True)
        write_text_whole(refs / f"{name}.json", json.dumps({"keys": keys, "time": time.time()}),
                         f"store {self.location}")

    def pinned(self) -> set[tuple[str, str]]:
        return {tuple(k) for p in self.root.glob("refs/*.json") for k in json.loads(p.read_text())["keys"]}
