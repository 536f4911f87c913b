from __future__ import annotations

import datasets
from prefect import task

from qa_lib.features import build_eval_features, build_train_features
from qa_lib.modeling import load_tokenizer
from qa_lib.store import Store
from tasks.policy import key_from_param, retry_unless_deterministic


@task(name="build-features", cache_key_fn=key_from_param, retry_condition_fn=retry_unless_deterministic)
def build_features(kind: str, data: dict, model: str, max_length: int, doc_stride: int, num_proc: int | None,
                   store_root: str, stage: str, key: str, drop_answerless: bool = False) -> dict:
    store = Store(store_root)
    examples = datasets.load_from_disk(data["path"])
    tokenizer = load_tokenizer(model)
    if kind == "train":
        feats = build_train_features(examples, tokenizer, max_length, doc_stride, num_proc, drop_answerless)
    else:
        feats = build_eval_features(examples, tokenizer, max_length, doc_stride, num_proc)
    with store.writing(stage, key) as tmp:
        feats.save_to_disk(str(tmp / "features"))
    return {"path": str(store.path(stage, key) / "features"), "num_features": len(feats), "key": key}
