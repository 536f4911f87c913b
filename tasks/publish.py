from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from prefect import task

from qa_lib.folders import copy_whole
from qa_lib.store import open_store
from tasks.policy import RETRY, retry_unless_deterministic
from tasks.stage import fetch


@task(name="publish-local", retry_condition_fn=retry_unless_deterministic, **RETRY)
def publish_local(store: str, model: dict | None, predictions: dict | None, output_dir: str) -> dict:
    """Copy the model and the predictions to `output_dir/model` and `output_dir/predictions`, each
    swapped in whole (never half-written). Nothing else in `output_dir` is touched: it is the
    user's folder (`output_dir: .` must not cost them their files), and `artifacts/` or an
    `evaluation/` written there earlier stay."""
    storage = open_store(store)
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if model:
        _swap_in(fetch(storage, model), out / "model")
    if predictions:
        _swap_in(fetch(storage, predictions), out / "predictions")
    return {"model_dir": str(out / "model") if model else None,
            "predictions_dir": str(out / "predictions") if predictions else None}


def _swap_in(source: Path, dest: Path) -> None:
    """`dest` becomes a copy of the store entry `source` in one rename, the old `dest` removed after."""
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp"
    copy_whole(source, tmp, f"output_dir {dest.parent}", ignore=shutil.ignore_patterns("_COMPLETE"))
    old = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.old"
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
