from __future__ import annotations

import json

import datasets
import numpy as np
from prefect import task

from qa_lib.config import PipelineConfig
from qa_lib.metrics import score
from qa_lib.batching import Padding
from qa_lib.modeling import load_qa_model, load_tokenizer
from qa_lib.postprocess import postprocess
from qa_lib.predict import predict_logits
from qa_lib.store import Store
from qa_lib.train import resolve_precision
from tasks.policy import key_from_param, retry_unless_deterministic


@task(name="predict", cache_key_fn=key_from_param, retry_condition_fn=retry_unless_deterministic)
def predict(model_dir: str, features: dict, batch_size: int, precision: str, store_root: str,
            stage: str, key: str) -> dict:
    store = Store(store_root)
    feats = datasets.load_from_disk(features["path"])
    start, end = predict_logits(load_qa_model(model_dir), feats, batch_size, resolve_precision(precision),
                                padding=Padding.of(load_tokenizer(model_dir)))
    with store.writing(stage, key) as tmp:
        np.savez(tmp / "logits.npz", start=start, end=end)
    return {"path": str(store.path(stage, key) / "logits.npz"), "key": key}


@task(name="post-process", cache_key_fn=key_from_param, retry_condition_fn=retry_unless_deterministic)
def post_process(config: PipelineConfig, data: dict, features: dict, logits: dict, store_root: str,
                 stage: str, key: str) -> dict:
    store = Store(store_root)
    arrays = np.load(logits["path"])
    preds = postprocess(datasets.load_from_disk(data["path"]), datasets.load_from_disk(features["path"]),
                        arrays["start"], arrays["end"], config.n_best_size, config.max_answer_length,
                        config.version_2_with_negative, config.null_score_diff_threshold)
    with store.writing(stage, key) as tmp:
        preds.write(tmp)
    folder = store.path(stage, key)
    files = {"predictions": str(folder / "predictions.json"), "nbest": str(folder / "nbest_predictions.json")}
    if preds.null_odds is not None:
        files["null_odds"] = str(folder / "null_odds.json")
    return {"dir": str(folder), "files": files, "key": key}


@task(name="compute-metrics", cache_key_fn=key_from_param, retry_condition_fn=retry_unless_deterministic)
def compute_metrics(data: dict, predictions: dict, version_2_with_negative: bool, store_root: str,
                    stage: str, key: str) -> dict:
    store = Store(store_root)
    files = predictions["files"]
    answers = json.loads(open(files["predictions"]).read())
    null_odds = json.loads(open(files["null_odds"]).read()) if "null_odds" in files else None
    metrics = score(datasets.load_from_disk(data["path"]), answers, null_odds, version_2_with_negative)
    with store.writing(stage, key) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return dict(metrics)
