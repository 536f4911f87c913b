from __future__ import annotations

from prefect import task

from qa_lib.config import PipelineConfig
from qa_lib.errors import ConfigError
from qa_lib.validate import check_model_source, check_output_dir
from tasks.policy import retry_unless_deterministic


@task(name="preflight", retry_condition_fn=retry_unless_deterministic, retries=2, retry_delay_seconds=2)
def preflight(config: PipelineConfig, training: bool, model: str | None = None) -> None:
    """Cheap checks that fail a run before any expensive work: inputs named, model loadable."""
    if training and config.train_data is None:
        raise ConfigError("train_data: required to train (set train_data.path)")
    if config.eval_data is None and not training:
        raise ConfigError("eval_data: required to evaluate (set eval_data.path)")
    check_model_source(model or config.model)
    check_output_dir(config.output_dir)
