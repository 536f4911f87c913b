from __future__ import annotations

from prefect import task

from qa_lib.config import PipelineConfig
from qa_lib.preflight import check_answer_run, check_run
from tasks.policy import retry_unless_deterministic


@task(name="preflight", retry_condition_fn=retry_unless_deterministic, retries=2, retry_delay_seconds=2)
def preflight(config: PipelineConfig, training: bool, model: str | None = None, store: str | None = None) -> None:
    """Cheap checks that fail a run before any expensive work: inputs named, model loadable."""
    check_run(config, training, model, store)


@task(name="preflight", retry_condition_fn=retry_unless_deterministic, retries=2, retry_delay_seconds=2)
def preflight_answers(config: PipelineConfig, model: str, output: str, store: str | None = None) -> None:
    """answer_qa's checks before any work: a champion if that is the model, the model, the
    questions' source, the answers' output."""
    check_answer_run(config, model, output, store)
