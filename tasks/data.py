from __future__ import annotations

from prefect import task

from qa_lib.config import DataSource
from qa_lib.data import load_examples
from qa_lib.store import Store
from qa_lib.validate import validate_examples
from tasks.policy import RETRY, key_from_param, retry_unless_deterministic


@task(name="load-dataset", cache_key_fn=key_from_param, retry_condition_fn=retry_unless_deterministic, **RETRY)
def load_dataset(source: DataSource, version_2_with_negative: bool, split: str, store_root: str,
                 stage: str, key: str) -> dict:
    """Load and validate a data source; keep the examples as Arrow in the store."""
    store = Store(store_root)
    examples = load_examples(source, default_split=split)
    validate_examples(examples, version_2_with_negative, source.path)
    with store.writing(stage, key) as tmp:
        examples.save_to_disk(str(tmp / "examples"))
    return {"path": str(store.path(stage, key) / "examples"), "num_examples": len(examples), "key": key}
