"""Checks that run before any tokenization, each problem naming the example id."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import datasets

from qa_lib.errors import ConfigError, DataError, ModelError


def find_problems(examples: datasets.Dataset, version_2_with_negative: bool) -> list[str]:
    """Every problem in `examples`, one line each, prefixed by the example id."""
    problems: list[str] = []
    seen: set[str] = set()
    cols = examples.select_columns(["id", "context", "question", "answers"]).to_dict()
    for ex_id, context, question, answers in zip(cols["id"], cols["context"], cols["question"], cols["answers"]):
        if not ex_id:
            problems.append("an example has an empty id")
        elif ex_id in seen:
            problems.append(f"{ex_id}: duplicate id")
        seen.add(ex_id)
        if not (question or "").strip():
            problems.append(f"{ex_id}: empty question")
        if not (context or "").strip():
            problems.append(f"{ex_id}: empty context")
            continue
        texts, starts = answers["text"], answers["answer_start"]
        if len(texts) != len(starts):
            problems.append(f"{ex_id}: {len(texts)} answer texts but {len(starts)} answer_start values")
            continue
        if not texts and not version_2_with_negative:
            problems.append(f"{ex_id}: no answer, but version_2_with_negative is false (SQuAD v1 needs answers)")
        for k, (text, start) in enumerate(zip(texts, starts), 1):
            if not text:
                problems.append(f"{ex_id}: answer {k} has empty text")
            elif start < 0 or context[start : start + len(text)] != text:
                # Where, not what: the data's own text is never quoted in an error (it may be
                # private, and it is in the file for whoever fixes it).
                at = context.find(text)
                where = f"the context has it at {at}" if at >= 0 else "the context does not contain it"
                problems.append(f"{ex_id}: answer {k} ({len(text)} characters) not found at answer_start {start}; "
                                f"{where}")
    return problems


def validate_examples(examples: datasets.Dataset, version_2_with_negative: bool, source: str) -> None:
    """Raise one `DataError` listing every problem, or return quietly."""
    if len(examples) == 0:
        raise DataError(source, ["no examples"])
    problems = find_problems(examples, version_2_with_negative)
    if problems:
        raise DataError(source, problems)


def check_model_source(model: str) -> None:
    """Fail early on a model reference that cannot work: a missing folder, or no fast tokenizer."""
    from qa_lib.modeling import load_tokenizer, resolve_model

    resolved = resolve_model(model)
    path = Path(resolved)
    if model.startswith((".", "/", "~")) or path.suffix or path.exists():
        if not path.is_dir():
            raise ModelError(f"model folder not found: {model}")
        if not (path / "config.json").exists():
            raise ModelError(f"{model}: not a model folder (no config.json)")
    check_qa_architecture(model, resolved)
    tokenizer = load_tokenizer(resolved)
    # transformers 5 quietly builds a tokenizer of special tokens only when vocabulary files are
    # missing; training on it would "work" and learn nothing.
    if len(tokenizer) < 100:
        raise ModelError(f"{model}: the tokenizer has only {len(tokenizer)} tokens; its vocabulary files are "
                         f"missing ({tokenizer_files_expected(tokenizer)})")
    config_file = path / "config.json"
    if config_file.exists():
        vocab_size = json.loads(config_file.read_text()).get("vocab_size")
        if vocab_size and len(tokenizer) > vocab_size:
            raise ModelError(f"{model}: tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab_size}")


@functools.lru_cache(maxsize=8)
def _model_config(resolved: str):
    """A model folder's (or Hub id's) config, read once for all of preflight's checks."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolved)


def check_qa_architecture(model: str, resolved: str) -> None:
    """A model whose architecture transformers cannot give a question-answering head, refused by name."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES

    try:
        config = _model_config(resolved)
    except Exception as exc:  # noqa: BLE001 - an unknown model_type, an unreadable config.json
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ModelError(f"cannot load the configuration of model {model!r}: {first}") from None
    if config.model_type not in MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES:
        raise ModelError(f"{model}: a {config.model_type!r} model has no question-answering head in transformers "
                         "(AutoModelForQuestionAnswering takes e.g. bert, roberta, xlm-roberta, deberta-v2, "
                         "electra, xlnet, modernbert)")


# Models that number positions from pad_token_id + 1 (fairseq's convention): 514 embeddings, 512 tokens.
_POSITIONS_AFTER_PAD = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer",
                        "roberta-prelayernorm", "xmod", "data2vec-text", "ibert", "mpnet", "luke"}


def max_window(model: str) -> int | None:
    """The longest window `model` can take, from its position embeddings (None: relative positions, no limit)."""
    from qa_lib.modeling import resolve_model

    config = _model_config(resolve_model(model))
    positions = getattr(config, "max_position_embeddings", None)
    relative = getattr(config, "position_biased_input", True) is False or config.model_type in ("xlnet",)
    if not positions or relative:
        return None
    if config.model_type in _POSITIONS_AFTER_PAD:
        positions -= (getattr(config, "pad_token_id", None) or 0) + 1
    return positions


def check_windows_fit(model: str, windows: dict[str, int]) -> None:
    """Each window (name → tokens) fits the model's position embeddings; named and refused before any data."""
    limit = max_window(model)
    for name, length in windows.items():
        if limit is not None and length > limit:
            raise ConfigError(f"{name} ({length}) is longer than model {model} can take ({limit} positions)")


def check_trained_head(model: str) -> None:
    """Refuse to evaluate a model folder whose weights hold no question-answering head: a base model
    would get a random head, and its scores would be noise reported as if they meant something."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForQuestionAnswering

    from qa_lib.modeling import resolve_model

    folder = Path(resolve_model(model))
    weights = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not weights:
        return  # a Hub id or .bin weights: the model loader warns instead
    with torch.device("meta"):  # shapes only: no memory, no time
        qa_model = AutoModelForQuestionAnswering.from_config(_model_config(str(folder)))
    prefix = qa_model.base_model_prefix + "."
    head = [k for k in qa_model.state_dict() if not k.startswith(prefix)]
    stored: set[str] = set()
    for file in weights:
        with safe_open(str(file), "pt") as f:
            stored.update(f.keys())
    if head and not any(k in stored for k in head):
        raise ModelError(f"{model}: its weights hold no question-answering head ({', '.join(head)}); it is a base "
                         "model, and its answers would be noise: fine-tune it first (qa-pipeline train)")


def tokenizer_files_expected(tokenizer) -> str:
    """The files a tokenizer of this class loads from, as a user would look for them."""
    files = dict(getattr(tokenizer, "vocab_files_names", None) or {})
    fast = files.pop("tokenizer_file", "tokenizer.json")
    slow = " + ".join(files.values())
    name = type(tokenizer).__name__
    return f"{name} expects {fast}" + (f", or {slow}" if slow else "")


def check_output_dir(output_dir: str) -> None:
    """Fail before training, not after it, when the results could not be written."""
    import tempfile

    path = Path(output_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"output_dir: cannot write to {output_dir}: {exc.strerror or exc}") from None
