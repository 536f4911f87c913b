from __future__ import annotations

import fcntl
import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import datasets
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging import get_run_logger
from transformers import TrainerCallback

from qa_lib.config import PipelineConfig
from qa_lib.launch import fine_tune_distributed, process_count
from qa_lib.store import Store
from qa_lib.train import fine_tune as qa_fine_tune
from tasks.policy import key_from_param, retry_unless_deterministic


class _PrefectProgress(TrainerCallback):
    """Mirrors training progress into a Prefect progress artifact and the run log."""

    def __init__(self, logger):
        self.logger = logger
        self.artifact_id = None
        self.last = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.artifact_id = create_progress_artifact(progress=0.0, key="training-progress",
                                                    description="fine-tuning progress (% of optimizer steps)")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.artifact_id is None or not state.max_steps:
            return
        pct = 100.0 * state.global_step / state.max_steps
        if pct - self.last >= 1 or state.global_step == state.max_steps:
            update_progress_artifact(self.artifact_id, pct)
            self.last = pct
        if logs and "loss" in logs:
            self.logger.info("step %d/%d loss %.4f", state.global_step, state.max_steps, logs["loss"])


@contextmanager
def _exclusive(path: Path):
    """An OS file lock: two runs of one config on this store train once; the second waits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@task(name="fine-tune", cache_key_fn=key_from_param, retry_condition_fn=retry_unless_deterministic)
def fine_tune(config: PipelineConfig, features: dict, store_root: str, stage: str, key: str) -> dict:
    logger = get_run_logger()
    store = Store(store_root)
    final = store.path(stage, key)
    with _exclusive(store.root / "locks" / f"{stage}-{key}.lock"):
        if store.has(stage, key):  # another run trained it while we waited
            logger.info("model %s was trained by a concurrent run; reusing it", key)
            return json.loads((final / "train_result.json").read_text())
        work = store.work_dir(stage, key)
        with (work / "events.log").open("a") as log:
            log.write(f"{time.time()} train-start\n")
        nproc = process_count()
        if nproc > 1:
            logger.info("launching data-parallel training on %d processes", nproc)
            result = fine_tune_distributed(config, features["path"], work, nproc)
        else:
            train_features = datasets.load_from_disk(features["path"])
            result = asdict(qa_fine_tune(config, train_features, work, callbacks=[_PrefectProgress(logger)]))
            result["world_size"] = 1
        if result["resumed_from"]:
            logger.info("resumed from %s", result["resumed_from"])
        with store.writing(stage, key) as tmp:
            Path(result["model_dir"]).rename(tmp / "model")
            summary = {**result, "model_dir": str(final / "model"), "key": key}
            (tmp / "train_result.json").write_text(json.dumps(summary))
        shutil.rmtree(work / "checkpoints", ignore_errors=True)  # the finished model supersedes them
    return summary
