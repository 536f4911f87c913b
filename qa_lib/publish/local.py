"""A folder target: `<root>/runs/<run id>/` and an atomically replaced `<root>/champion.json`."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

from qa_lib.errors import QAPipelineError, StorageError
from qa_lib.folders import copy_whole, write_problem, write_text_whole


class PointerChanged(QAPipelineError):
    """Another publisher promoted a model since we read the champion pointer."""


class FolderTarget:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def check(self) -> None:
        # Making the folder can fail as well as writing in it (a file where a folder goes, no permission).
        if problem := write_problem(self.root):
            raise StorageError(f"publish target {self.root} is not writable: {problem}")

    def read_pointer(self) -> tuple[dict | None, str | None]:
        path = self.root / "champion.json"
        if not path.exists():
            return None, None
        text = path.read_text()
        return json.loads(text), text

    def upload_run(self, folder: Path, run_id: str) -> str:
        dest = self.root / "runs" / run_id
        tmp = dest.parent / f".{run_id}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        copy_whole(folder, tmp, f"publish target {self.root}")
        os.replace(tmp, dest)
        return str(dest)

    def run_location(self, run_id: str) -> str:
        return str(self.root / "runs" / run_id)

    def put_pointer(self, pointer: dict, expected: str | None) -> None:
        """Write champion.json only if it still holds `expected` (None: did not exist)."""
        with open(self.root / ".champion.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.read_pointer()[1]
            if current != expected:
                raise PointerChanged("champion.json changed since it was read; not promoting")
            write_text_whole(self.root / "champion.json", json.dumps(pointer, indent=2),
                             f"publish target {self.root}")

    def local_model(self, pointer: dict) -> str:
        return str(Path(pointer["location"]) / "model")
