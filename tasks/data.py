from __future__ import annotations

from prefect import task

from qa_lib.config import DataSource, PipelineConfig
from qa_lib.data import keep_examples, load_examples, load_questions as read_questions
from qa_lib.store import open_store
from qa_lib.validate import validate_examples
from tasks.policy import RETRY, STAGE
from tasks.stage import entry, run_stage


# Both loading tasks skip the reading when the store already holds their entry: a run started from the
# command line without a Prefect server checks and keeps its data before Prefect starts
# (`qa_lib.preflight.check_and_keep_data`), and the file must not be read and validated twice.
@task(name="load-dataset", **STAGE, **RETRY)
def _load_dataset(source: DataSource, version_2_with_negative: bool, split: str, store: str, stage: str,
                  key: str) -> dict:
    """Load and validate a data source; keep the examples as Arrow in the store."""
    storage = open_store(store)
    if not storage.has(stage, key):
        examples = load_examples(source, default_split=split)
        validate_examples(examples, version_2_with_negative, source.path)
        keep_examples(storage, stage, key, examples)
    return entry(stage, key, "examples", kind="train" if split == "train" else "eval")


def load_dataset(config: PipelineConfig, kind: str) -> dict:
    """The train or eval examples of `config`, loaded and validated."""
    source = config.train_data if kind == "train" else config.eval_data
    return run_stage(_load_dataset, f"{kind}_data", source, config.version_2_with_negative,
                     "train" if kind == "train" else "validation")


@task(name="load-questions", **STAGE, **RETRY)
def _load_questions(source: DataSource, store: str, stage: str, key: str) -> dict:
    """Load questions to answer (answers neither needed nor checked); keep them as Arrow in the store."""
    storage = open_store(store)
    if not storage.has(stage, key):
        keep_examples(storage, stage, key, read_questions(source))
    # Their features are evaluation windows, built as an eval set's.
    return entry(stage, key, "examples", kind="eval")


def load_questions(config: PipelineConfig) -> dict:
    """The questions of `config.eval_data`, to answer without scoring."""
    return run_stage(_load_questions, "questions", config.eval_data)
