from __future__ import annotations

import datasets
from prefect import task

from qa_lib.config import PipelineConfig
from qa_lib.data import save_dataset
from qa_lib.features import build_eval_features, build_train_features
from qa_lib.modeling import load_tokenizer
from qa_lib.store import open_store
from tasks.policy import RETRY, STAGE
from tasks.stage import entry, fetch, run_stage


@task(name="build-features", **STAGE, **RETRY)
def _build_features(data: dict, tokenizer: str, max_length: int, doc_stride: int, num_proc: int | None,
                    drop_answerless: bool, store: str, stage: str, key: str) -> dict:
    storage = open_store(store)
    examples = datasets.load_from_disk(str(fetch(storage, data)))
    if data["kind"] == "train":
        feats = build_train_features(examples, load_tokenizer(tokenizer), max_length, doc_stride, num_proc,
                                     drop_answerless)
    else:
        feats = build_eval_features(examples, load_tokenizer(tokenizer), max_length, doc_stride, num_proc)
    with storage.writing(stage, key) as tmp:
        save_dataset(feats, tmp / "features")
    return entry(stage, key, "features", num_features=len(feats))


def build_features(data: dict, config: PipelineConfig, tokenizer: str) -> dict:
    """Training windows (with labels) or eval windows (with offsets) of `data`, by its kind."""
    kind = data["kind"]
    max_length, doc_stride = (config.max_length, config.doc_stride) if kind == "train" else config.eval_window
    return run_stage(_build_features, f"{kind}_features", data, tokenizer, max_length, doc_stride, config.num_proc,
                     config.drop_answerless and kind == "train")
