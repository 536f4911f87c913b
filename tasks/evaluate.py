from __future__ import annotations

import json
import logging
import time

import datasets
import numpy as np
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging import get_run_logger

from qa_lib.batching import Padding
from qa_lib.config import PipelineConfig
from qa_lib.cpu_precision import cpu_bf16_advice
from qa_lib.metrics import score
from qa_lib.modeling import load_qa_model, load_tokenizer
from qa_lib.postprocess import postprocess
from qa_lib.predict import predict_logits, resolve_precision
from qa_lib.progress import log_above_bars
from qa_lib.sizes import human_duration
from qa_lib.store import open_store
from tasks.policy import RETRY, STAGE
from tasks.stage import entry, fetch, run_stage


def _model_path(storage, model: dict | str) -> str:
    return str(fetch(storage, model)) if isinstance(model, dict) else model


# Seconds between prediction's log lines: a worker has no progress bar, and the SQuAD dev set takes
# minutes on a CPU pool; a prediction shorter than this logs none.
PREDICT_LOG_EVERY_S = 30.0
# And between its artifact's updates: each is a request to the API (20 ms against a local server),
# made between two batches; on a GPU a batch takes milliseconds, so one per percent would leave the
# device waiting for about 2 s in all.
PREDICT_ARTIFACT_EVERY_S = 2.0


class _PredictionProgress:
    """Prediction's progress in the run: a progress artifact and, every `PREDICT_LOG_EVERY_S`, a log
    line with the features done, their rate and the time left (from the share of tokens done: the
    longest features go first)."""

    def __init__(self, logger):
        self.logger = logger
        self.started = self.logged = self.updated = time.monotonic()
        self.artifact_id = create_progress_artifact(progress=0.0, key="prediction-progress",
                                                    description="prediction progress (% of the eval features' tokens)")
        self.shown = 0.0

    def __call__(self, done: int, total: int, token_share: float) -> None:
        pct, now = 100.0 * token_share, time.monotonic()
        if done == total or (pct - self.shown >= 1 and now - self.updated >= PREDICT_ARTIFACT_EVERY_S):
            update_progress_artifact(self.artifact_id, pct)
            self.shown, self.updated = pct, now
        if now - self.logged >= PREDICT_LOG_EVERY_S:
            elapsed = now - self.started
            left = elapsed * (1 - token_share) / token_share
            log_above_bars(self.logger, logging.INFO,
                           "predicted %d of %d features (%.0f %% of the tokens) in %s, %.0f features/s, "
                           "about %s left",
                           done, total, pct, human_duration(elapsed), done / max(elapsed, 1e-9), human_duration(left))
            self.logged = now


@task(name="predict", **STAGE, **RETRY)
def _predict(model: dict | str, features: dict, batch_size: int, precision: str, window: int, store: str, stage: str,
             key: str) -> dict:
    storage = open_store(store)
    model_dir = _model_path(storage, model)
    feats = datasets.load_from_disk(str(fetch(storage, features)))
    qa_model = load_qa_model(model_dir)
    logger = get_run_logger()
    if advice := cpu_bf16_advice(precision, training=False):
        logger.log(*advice)
    start, end = predict_logits(qa_model, feats, batch_size, resolve_precision(precision),
                                padding=Padding.of(load_tokenizer(model_dir)).for_model(qa_model, window),
                                on_batch=_PredictionProgress(logger))
    with storage.writing(stage, key) as tmp:
        np.savez(tmp / "logits.npz", start=start, end=end)
    return entry(stage, key, "logits.npz")


@task(name="post-process", **STAGE, **RETRY)
def _post_process(config: PipelineConfig, data: dict, features: dict, logits: dict, store: str, stage: str,
                  key: str) -> dict:
    storage = open_store(store)
    arrays = np.load(fetch(storage, logits))
    preds = postprocess(datasets.load_from_disk(str(fetch(storage, data))),
                        datasets.load_from_disk(str(fetch(storage, features))),
                        arrays["start"], arrays["end"], config.n_best_size, config.max_answer_length,
                        config.version_2_with_negative, config.null_score_diff_threshold)
    with storage.writing(stage, key) as tmp:
        preds.write(tmp)
    files = ["predictions.json", "nbest_predictions.json"] + (["null_odds.json"] if preds.null_odds is not None else [])
    return entry(stage, key, "", files=files)


@task(name="compute-metrics", **STAGE, **RETRY)
def _compute_metrics(data: dict, predictions: dict, version_2_with_negative: bool, store: str, stage: str,
                     key: str) -> dict:
    storage = open_store(store)
    folder = fetch(storage, predictions)
    answers = json.loads((folder / "predictions.json").read_text())
    null_odds = (json.loads((folder / "null_odds.json").read_text()) if "null_odds.json" in predictions["files"]
                 else None)
    metrics = score(datasets.load_from_disk(str(fetch(storage, data))), answers, null_odds, version_2_with_negative)
    with storage.writing(stage, key) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return dict(metrics)


def predict(model: dict | str, features: dict, config: PipelineConfig) -> dict:
    """Start and end logits of every eval feature; `model` is a trained-model result or a folder."""
    return run_stage(_predict, "logits", model, features, config.per_device_eval_batch_size, config.precision,
                     config.eval_window[0])


def post_process(data: dict, features: dict, logits: dict, config: PipelineConfig) -> dict:
    """Answers, n-best lists (and null odds for v2) from the logits."""
    return run_stage(_post_process, "predictions", config, data, features, logits)


def compute_metrics(data: dict, predictions: dict, config: PipelineConfig) -> dict:
    """The official SQuAD scores of the predictions."""
    return run_stage(_compute_metrics, "metrics", data, predictions, config.version_2_with_negative)
