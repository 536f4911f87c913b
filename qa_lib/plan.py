"""The pipeline as data: every stage's cache key, computed up front from the config.

A key covers exactly what decides that stage's output: the fingerprints of its inputs, the
parameters it uses, and the source of the `qa_lib` modules that compute it. So changing
`doc_stride` changes the features, model, logits and later keys but not the data keys, and
changing `n_best_size` changes only the predictions and metrics keys. The same key names the
Prefect cache record, the store entry and the training lease.

Models are passed in resolved (`modeling.resolve_model`: always a local folder, a Hub id's being
the snapshot of the revision the Hub names): resolving one may download it, so the flow does it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qa_lib.config import PipelineConfig
from qa_lib.hashing import folder_fingerprint, hash_json, sha256_file

_QA_LIB = Path(__file__).resolve().parent

# Which modules decide each stage's output; editing one invalidates that stage and later ones.
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "data": ("data.py", "validate.py"),
    "features": ("features.py",),
    "model": ("train.py", "modeling.py", "batching.py", "packing.py", "loss.py", "varlen_attention.py"),
    "logits": ("predict.py", "features.py", "batching.py"),
    "predictions": ("postprocess.py",),
    "metrics": ("metrics.py",),
}

TRAIN_PARAMS = (
    "learning_rate", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
    "warmup_ratio", "weight_decay", "lr_scheduler_type", "seed", "precision", "max_steps",
    "hidden_dropout", "attention_dropout", "freeze_word_embeddings", "batching", "tokens_per_batch", "compile",
    "packed_attention",
)  # not activation_checkpointing: recomputing activations trains the same weights

_MODEL_FILES = ("*.json", "*.safetensors", "*.bin", "*.txt", "*.model")
_TOKENIZER_FILES = ("tokenizer*.json", "vocab*", "special_tokens_map.json", "*.model", "merges.txt")


def code_fingerprint(stage: str) -> str:
    return hash_json([[m, sha256_file(_QA_LIB / m)] for m in STAGE_MODULES[stage]])


def source_fingerprint(source) -> str:
    """Fingerprint of a `DataSource`: file bytes for local data, name+split+commit for the Hub (the
    default branch's name where the Hub cannot be asked: offline, the cache's copy of it is read)."""
    path = source.local_path
    if source.path.startswith("s3://"):
        from qa_lib.s3 import object_fingerprint

        content = object_fingerprint(source.path)
    elif path.is_file():
        content = sha256_file(path)
    elif path.is_dir():
        content = folder_fingerprint(path)
    else:
        from qa_lib.data import hub_dataset_ref

        # By name and commit: the same commit named by a tag or by its id is the same data.
        name, commit = hub_dataset_ref(source.path)
        content = f"hub:{name}@{commit or 'main'}"
    return hash_json({"content": content, "subset": source.subset, "split": source.split, "columns": source.columns,
                      "limit": source.limit})


def model_fingerprint(resolved: str) -> str:
    """Of a resolved model (`modeling.resolve_model`): its files' bytes."""
    return folder_fingerprint(_model_folder(resolved), _MODEL_FILES)


def tokenizer_fingerprint(resolved: str) -> str:
    return folder_fingerprint(_model_folder(resolved), _TOKENIZER_FILES)


def _model_folder(resolved: str) -> Path:
    # An id or a missing folder would fingerprint as "no files": the same key for any such model.
    if not Path(resolved).is_dir():
        raise ValueError(f"{resolved}: not a model folder; resolve it with modeling.resolve_model first")
    return Path(resolved)


def stage_key(stage: str, **parts: Any) -> str:
    return hash_json({"stage": stage, "code": code_fingerprint(stage), **parts})[:24]


@dataclass(frozen=True)
class EvalKeys:
    data: str
    features: str
    logits: str
    predictions: str
    metrics: str


@dataclass(frozen=True)
class TrainKeys:
    data: str
    features: str
    model: str


def data_key(source, version_2_with_negative: bool) -> str:
    return stage_key("data", source=source_fingerprint(source), v2=version_2_with_negative)


def questions_key(source, version_2_with_negative: bool) -> str:
    """Questions to answer are checked without their answers: never the same entry as the same file
    loaded as training or eval data, whose answers were checked."""
    return stage_key("data", source=source_fingerprint(source), v2=version_2_with_negative, answers="not checked")


def _window(config: PipelineConfig) -> dict:
    return {"max_length": config.max_length, "doc_stride": config.doc_stride}


def train_keys(config: PipelineConfig, resolved_model: str) -> TrainKeys:
    data = data_key(config.train_data, config.version_2_with_negative)
    features = stage_key("features", data=data, kind="train", tokenizer=tokenizer_fingerprint(resolved_model),
                         drop_answerless=config.drop_answerless, **_window(config))
    model = stage_key("model", features=features, model=model_fingerprint(resolved_model),
                      **{p: getattr(config, p) for p in TRAIN_PARAMS})
    return TrainKeys(data=data, features=features, model=model)


def eval_protocol(config: PipelineConfig, eval_data_key: str) -> str:
    """What makes two models' scores comparable: the same eval data, windows, precision and
    post-processing, and the same code turning a model into a score. The retrain gate reuses a
    champion's recorded score only under the same protocol; otherwise it scores the champion again."""
    max_length, doc_stride = config.eval_window
    return hash_json({"data": eval_data_key, "max_length": max_length, "doc_stride": doc_stride,
                      "precision": config.precision, "n_best_size": config.n_best_size,
                      "max_answer_length": config.max_answer_length, "v2": config.version_2_with_negative,
                      "null_score_diff_threshold": config.null_score_diff_threshold,
                      "code": {stage: code_fingerprint(stage) for stage in ("features", "logits", "predictions", "metrics")}})


def eval_keys(config: PipelineConfig, model_identity: str, tokenizer_identity: str,
              data: str | None = None) -> EvalKeys:
    """Keys for evaluating a model whose identity (a model key or a folder fingerprint) is given;
    `data`: the key of the examples, when they are not the config's eval set (questions to answer)."""
    data = data or data_key(config.eval_data, config.version_2_with_negative)
    max_length, doc_stride = config.eval_window
    features = stage_key("features", data=data, kind="eval", tokenizer=tokenizer_identity,
                         max_length=max_length, doc_stride=doc_stride)
    logits = stage_key("logits", features=features, model=model_identity, precision=config.precision)
    predictions = stage_key("predictions", logits=logits, n_best_size=config.n_best_size,
                            max_answer_length=config.max_answer_length, v2=config.version_2_with_negative,
                            null_score_diff_threshold=config.null_score_diff_threshold)
    metrics = stage_key("metrics", predictions=predictions, data=data)
    return EvalKeys(data=data, features=features, logits=logits, predictions=predictions, metrics=metrics)


# A run's stage keys by slot, in the order a run meets them; a slot's stage is the store folder it lives in.
STAGE_OF = {"train_data": "data", "eval_data": "data", "questions": "data", "train_features": "features",
            "eval_features": "features", "model": "model", "logits": "logits", "predictions": "predictions",
            "metrics": "metrics"}
LABELS = {"train_data": "load train data", "eval_data": "load eval data", "questions": "load questions",
          "train_features": "train features", "eval_features": "eval features", "model": "fine-tune",
          "logits": "predict", "predictions": "post-process", "metrics": "metrics"}


def run_keys(config: PipelineConfig, resolved_model: str, training: bool) -> dict[str, str]:
    """Every stage key of a run, by slot: training `resolved_model` (and evaluating the result, if
    the config has eval data), or evaluating it as it is."""
    keys: dict[str, str] = {}
    tokenizer = tokenizer_fingerprint(resolved_model)
    if training:
        train = train_keys(config, resolved_model)
        keys.update(train_data=train.data, train_features=train.features, model=train.model)
        model_identity = train.model
    else:
        model_identity = model_fingerprint(resolved_model)
    if config.eval_data is not None:
        evaluation = eval_keys(config, model_identity, tokenizer)
        keys.update(eval_data=evaluation.data, eval_features=evaluation.features, logits=evaluation.logits,
                    predictions=evaluation.predictions, metrics=evaluation.metrics)
    return {slot: keys[slot] for slot in STAGE_OF if slot in keys}


def answer_keys(config: PipelineConfig, resolved_model: str) -> dict[str, str]:
    """The stage keys of answering the questions of `config.eval_data` with `resolved_model`: the
    evaluation's stages up to the answers, without scores."""
    evaluation = eval_keys(config, model_fingerprint(resolved_model), tokenizer_fingerprint(resolved_model),
                           data=questions_key(config.eval_data, config.version_2_with_negative))
    return {"questions": evaluation.data, "eval_features": evaluation.features, "logits": evaluation.logits,
            "predictions": evaluation.predictions}
