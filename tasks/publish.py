from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from prefect import task

from qa_lib.store import open_store
from tasks.policy import RETRY, retry_unless_deterministic
from tasks.stage import fetch


@task(name="publish-local", retry_condition_fn=retry_unless_deterministic, **RETRY)
def publish_local(store: str, model: dict | None, predictions: dict | None, output_dir: str) -> dict:
    """Copy model and predictions to `output_dir`, swapping the folder in whole (never half-written)."""
    storage = open_store(store)
    out = Path(output_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    if model:
        shutil.copytree(fetch(storage, model), tmp / "model")
    if predictions:
        shutil.copytree(fetch(storage, predictions), tmp / "predictions", ignore=shutil.ignore_patterns("_COMPLETE"))
    old = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.old"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return {"model_dir": str(out / "model") if model else None,
            "predictions_dir": str(out / "predictions") if predictions else None}
