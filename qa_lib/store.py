"""Fingerprints and the content-addressed store.

Each stage's key is a hash of what determines its output: the fingerprints of its inputs, the
parameters it uses, and the source of the `qa_lib` modules that compute it. The same key names
both the Prefect cache entry and the store folder, so a cache hit and the files on disk agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

_QA_LIB = Path(__file__).resolve().parent

# Which modules decide each stage's output; editing one invalidates that stage and later ones.
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "data": ("data.py", "validate.py"),
    "features": ("features.py",),
    "model": ("train.py", "modeling.py", "batching.py"),
    "logits": ("predict.py", "features.py", "batching.py"),
    "predictions": ("postprocess.py",),
    "metrics": ("metrics.py",),
}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def folder_fingerprint(folder: str | Path, patterns: tuple[str, ...] = ("*",)) -> str:
    folder = Path(folder)
    files = sorted({p for pat in patterns for p in folder.rglob(pat) if p.is_file()})
    return hash_json([[str(p.relative_to(folder)), sha256_file(p)] for p in files])


def code_fingerprint(stage: str) -> str:
    modules = STAGE_MODULES[stage]
    return hash_json([[m, sha256_file(_QA_LIB / m)] for m in modules])


def source_fingerprint(source) -> str:
    """Fingerprint of a `DataSource`: file bytes for local data, name+split+revision for the Hub."""
    path = Path(source.path)
    if source.path.startswith("s3://"):
        from qa_lib.s3 import object_fingerprint

        content = object_fingerprint(source.path)
    elif path.is_file():
        content = sha256_file(path)
    elif path.is_dir():
        content = folder_fingerprint(path)
    else:
        content = f"hub:{source.path}:{os.environ.get('HF_DATASETS_REVISION', 'main')}"
    return hash_json({"content": content, "split": source.split, "columns": source.columns, "limit": source.limit})


def model_fingerprint(model: str) -> str:
    from qa_lib.modeling import resolve_model

    resolved = Path(resolve_model(model))
    if resolved.is_dir():
        return folder_fingerprint(resolved, ("*.json", "*.safetensors", "*.bin", "*.txt", "*.model"))
    return f"hub:{model}"


def tokenizer_fingerprint(model: str) -> str:
    from qa_lib.modeling import resolve_model

    resolved = Path(resolve_model(model))
    if resolved.is_dir():
        return folder_fingerprint(resolved, ("tokenizer*.json", "vocab*", "special_tokens_map.json", "*.model", "merges.txt"))
    return f"hub:{model}"


def stage_key(stage: str, **parts: Any) -> str:
    return hash_json({"stage": stage, "code": code_fingerprint(stage), **parts})[:24]


class Store:
    """Folders `<root>/<stage>/<key>/`, complete once `_COMPLETE` exists; written atomically."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / "_COMPLETE").exists()

    @contextmanager
    def writing(self, stage: str, key: str) -> Iterator[Path]:
        """Yield a temporary folder; on success it becomes the stage folder in one rename."""
        final = self.path(stage, key)
        tmp = final.parent / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir(parents=True)
        try:
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

    def work_dir(self, stage: str, key: str) -> Path:
        """A stable scratch folder for resumable work (training checkpoints) under a key."""
        path = self.root / "work" / stage / key
        path.mkdir(parents=True, exist_ok=True)
        return path
