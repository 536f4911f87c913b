from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import datasets
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging import get_run_logger

from qa_lib.checkpoint_sync import CheckpointToStore
from qa_lib.config import PipelineConfig
from qa_lib.cpu_precision import cpu_bf16_advice
from qa_lib.errors import naming_full_disk
from qa_lib.launch import fine_tune_distributed, process_count
from qa_lib.progress import log_above_bars
from qa_lib.sizes import human_duration
from qa_lib.store import open_store
from qa_lib.train import LossReporter
from qa_lib.train import fine_tune as qa_fine_tune
from qa_lib.varlen_attention import NAME as VARLEN
from tasks.policy import STAGE
from tasks.sigterm import sigterm_owner
from tasks.stage import entry, fetch, run_stage


class _PrefectProgress(LossReporter):
    """Mirrors training progress into a Prefect progress artifact and the run log."""

    def __init__(self, logger):
        self.logger = logger
        self.artifact_id = None
        self.last = 0.0
        self.first: tuple[float, int] | None = None  # (time, step) of the first loss logged

    def on_train_begin(self, args, state, control, **kwargs):
        self.start()

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.report(state.global_step, state.max_steps, logs)

    def start(self) -> None:
        self.artifact_id = create_progress_artifact(progress=0.0, key="training-progress",
                                                    description="fine-tuning progress (% of optimizer steps)")

    def report(self, step: int, max_steps: int, logs: dict | None) -> None:
        """One log record of the Trainer's: in-process, or handed on from a distributed run's rank 0."""
        if self.artifact_id is None or not max_steps:
            return
        pct = 100.0 * step / max_steps
        if pct - self.last >= 1 or step == max_steps:
            update_progress_artifact(self.artifact_id, pct)
            self.last = pct
        if logs and "loss" in logs:
            # Timed from the first loss logged, not from the start: that leaves out loading, a
            # compile and the steps a resumed run skips.
            now, left = time.monotonic(), None
            if self.first is None:
                self.first = (now, step)
            elif step > self.first[1]:
                per_step = (now - self.first[0]) / (step - self.first[1])
                left = (per_step, per_step * (max_steps - step))
            log_loss(self.logger, step, max_steps, logs["loss"], left)


def log_loss(logger, step: int, max_steps: int, loss: float, left: tuple[float, float] | None = None) -> None:
    """`left`: seconds a step and seconds left, once known."""
    if left is None:
        log_above_bars(logger, logging.INFO, "step %d/%d loss %.4f", step, max_steps, loss)
    else:
        log_above_bars(logger, logging.INFO, "step %d/%d loss %.4f (%.2f s a step, about %s left)", step, max_steps,
                       loss, left[0], human_duration(left[1]))


@task(name="fine-tune", **STAGE)
def _fine_tune(config: PipelineConfig, features: dict, store: str, stage: str, key: str) -> dict:
    logger = get_run_logger()
    storage = open_store(store)
    # One training per key across every worker that shares the store; the others wait, then reuse.
    with storage.lease(stage, key) as lease:
        logger.info("holding %s", lease.description)
        if storage.has(stage, key):
            logger.info("model %s was trained by a concurrent run; reusing it", key)
            return json.loads((storage.fetch(stage, key) / "train_result.json").read_text())
        work = storage.work_dir(stage, key)
        with (work / "events.log").open("a") as log:
            log.write(f"{time.time()} train-start\n")
        restored = storage.restore_checkpoint(stage, key, work / "checkpoints")
        if restored:
            logger.info("%s of this model found in %s", restored, storage.location)
        if advice := cpu_bf16_advice(config.precision, training=True):
            logger.log(*advice)
        nproc = process_count()
        # Checkpoints and the model are written under `work`; a full disk there is named, not retried.
        with naming_full_disk(f"fine-tune's checkpoints in {work}"):
            progress = _PrefectProgress(logger)
            sigterm = sigterm_owner()
            if nproc > 1:
                logger.info("launching data-parallel training on %d processes", nproc)
                progress.start()
                result = fine_tune_distributed(config, str(fetch(storage, features)), work, nproc,
                                               checkpoints_to=(storage.location, stage, key), on_log=progress.report,
                                               stop_at_once=sigterm.stop_at_once)
            else:
                train_features = datasets.load_from_disk(str(fetch(storage, features)))
                upload = CheckpointToStore(storage, stage, key, logger)
                with upload.finishing_on_failure():
                    result = asdict(qa_fine_tune(config, train_features, work, callbacks=[progress, upload],
                                                 sigterm_owner=sigterm))
        details = ", ".join(d for d in ("varlen attention" if result.get("attention") == VARLEN else "",
                                        "compiled" if result["compiled"] else "") if d)
        processes = f" in {result['world_size']} processes" if result["world_size"] > 1 else ""
        logger.info("trained on %s batches%s, %s%s%s", result["batching"], f" ({details})" if details else "",
                    result["precision"], processes,
                    f"; {result['batching_note']}" if result.get("batching_note") else "")
        if result["resumed_from"]:
            step = Path(result["resumed_from"]).name.removeprefix("checkpoint-")
            logger.info("resumed from step %s (%s)", step, result["resumed_from"])
        summary = {**result, **entry(stage, key, "model"), "model_dir": storage.uri(stage, key) + "/model"}
        with storage.writing(stage, key) as tmp:
            Path(result["model_dir"]).rename(tmp / "model")
            (tmp / "train_result.json").write_text(json.dumps(summary))
        storage.clear_checkpoints(stage, key)  # the finished model supersedes them
    return summary


def fine_tune(features: dict, config: PipelineConfig) -> dict:
    """Fine-tune `config.model` on the training features; resumes from the store's newest checkpoint."""
    return run_stage(_fine_tune, "model", config, features)
