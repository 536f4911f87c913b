"""train_qa: config → data → features → fine-tune → predict → post-process → metrics → publish."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger

from flows._evaluation import evaluate_stages, load_eval_data
from qa_lib.config import PipelineConfig
from qa_lib.progress import configure_progress
from qa_lib.plan import train_keys
from qa_lib.store import Store, tokenizer_fingerprint
from tasks.data import load_dataset
from tasks.features import build_features
from tasks.policy import cached, store_root as default_store_root
from tasks.preflight import preflight
from tasks.publish import publish_local
from tasks.report import report
from tasks.train import fine_tune


# Parameters are validated in the flow (PipelineConfig.coerce), so that a cross-field mistake made in
# the UI form fails the run with the config's own one-line message, not Prefect's wrapped one.
@flow(name="train_qa", validate_parameters=False)
def train_qa(config: PipelineConfig = PipelineConfig(), store_root: str | None = None) -> dict:
    """Fine-tune `config.model` on the training data, then evaluate it on the eval set.

    Args:
        config: The pipeline configuration: model, data, windows, training and post-processing settings.
        store_root: Content-addressed store (default: $QA_PIPELINE_STORE, else .qa-store).
    """
    config = PipelineConfig.coerce(config)
    configure_progress()
    timings: dict[str, float] = {}
    root = default_store_root(store_root)
    store = Store(root)
    root = str(store.root)

    t = time.perf_counter()
    preflight(config, training=True)
    keys = train_keys(config)
    timings["preflight"] = time.perf_counter() - t

    t = time.perf_counter()
    train_data = cached(load_dataset, store, "data", keys.data)(
        config.train_data, config.version_2_with_negative, "train", root, "data", keys.data)
    timings["load train data"] = time.perf_counter() - t

    # Eval data is loaded and validated now, not after training: a bad eval file fails in seconds.
    eval_data = load_eval_data(config, store, timings) if config.eval_data is not None else None

    t = time.perf_counter()
    features = cached(build_features, store, "features", keys.features)(
        "train", train_data, config.model, config.max_length, config.doc_stride, config.num_proc,
        root, "features", keys.features, config.drop_answerless)
    timings["train features"] = time.perf_counter() - t

    t = time.perf_counter()
    trained = cached(fine_tune, store, "model", keys.model)(config, features, root, "model", keys.model)
    timings["fine-tune"] = time.perf_counter() - t

    metrics, evaluation = {}, {}
    if config.eval_data is not None:
        metrics, evaluation = evaluate_stages(config, eval_data, trained["model_dir"], keys.model,
                                              tokenizer_fingerprint(config.model), store, timings)

    t = time.perf_counter()
    predictions_dir = evaluation["predictions"]["dir"] if evaluation else None
    published = publish_local(trained["model_dir"], predictions_dir, config.output_dir)
    timings["publish"] = time.perf_counter() - t

    summary = {
        "model_dir": published["model_dir"],
        "predictions_dir": published["predictions_dir"] if evaluation else None,
        "model_key": keys.model,
        "train_data_key": keys.data,
        "eval_data_key": evaluation.get("eval_data_key"),
        "store": root,
        "train_data": config.train_data.path,
        "eval_data": config.eval_data.path if config.eval_data else None,
        "base_model": config.model,
        "timings_s": timings,
    }
    artifacts_dir = str(Path(config.output_dir).resolve() / "artifacts")  # absolute: read from elsewhere than the worker
    report("train_qa", metrics, trained.get("log_history"), summary, artifacts_dir)
    get_run_logger().info("metrics: %s", metrics)
    get_run_logger().info("model: %s", published["model_dir"])
    return {"metrics": metrics, **summary, "artifacts_dir": artifacts_dir}


def run_train(config: PipelineConfig, store_root: str | None = None) -> dict:
    return train_qa(config=config, store_root=store_root)
