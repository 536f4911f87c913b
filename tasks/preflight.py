from __future__ import annotations

from prefect import task

from qa_lib.config import PipelineConfig
from qa_lib.data import check_source_exists
from qa_lib.errors import ConfigError
from qa_lib.store import open_store
from qa_lib.train import resolve_precision
from qa_lib.validate import (check_model_source, check_output_apart_from_store, check_output_dir,
                             check_trained_head, check_windows_fit)
from tasks.policy import retry_unless_deterministic


@task(name="preflight", retry_condition_fn=retry_unless_deterministic, retries=2, retry_delay_seconds=2)
def preflight(config: PipelineConfig, training: bool, model: str | None = None, store: str | None = None) -> None:
    """Cheap checks that fail a run before any expensive work: inputs named, model loadable."""
    if training and config.train_data is None:
        raise ConfigError("train_data: required to train (set train_data.path)")
    if config.eval_data is None and not training:
        raise ConfigError("eval_data: required to evaluate (set eval_data.path)")
    check_model_source(model or config.model)
    windows = {"eval_max_length": config.eval_window[0]}
    if training:
        windows["max_length"] = config.max_length
    else:
        check_trained_head(model or config.model)
    check_windows_fit(model or config.model, windows)
    resolve_precision(config.precision)  # fp16 on a machine without a GPU fails here, not after the features
    check_output_dir(config.output_dir)
    if not (storage := open_store(store)).remote:
        check_output_apart_from_store(config.output_dir, storage.root)
    # Every source before any is read: a missing eval file must not wait for the training set to load.
    for source in (config.train_data if training else None, config.eval_data):
        if source is not None:
            check_source_exists(source)
    if store is not None:
        # A missing bucket, bad credentials or a folder that cannot be written fail here, in one line.
        storage.check()
