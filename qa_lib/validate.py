"""Checks that run before any tokenization, each problem naming the example id."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING

from qa_lib.errors import ConfigError, DataError, ModelError, first_line, shown_id

if TYPE_CHECKING:  # imported for its types only: preflight's checks run before datasets is (seconds)
    import datasets


def find_problems(examples: datasets.Dataset, version_2_with_negative: bool, check_answers: bool = True) -> list[str]:
    """Every problem in `examples`, one line each, prefixed by the example id. Without
    `check_answers` (questions to answer) only ids, questions and contexts are checked."""
    problems: list[str] = []
    seen: set[str] = set()
    cols = examples.select_columns(["id", "context", "question", "answers"]).to_dict()
    for row, (ex_id, context, question, answers) in enumerate(zip(cols["id"], cols["context"], cols["question"],
                                                                  cols["answers"])):
        if not ex_id:
            problems.append(f"example {row} (from 0) has no id (an id is a string or an integer)")
            ex_id = f"example {row}"
        elif ex_id in seen:
            problems.append(f"{shown_id(ex_id)}: duplicate id")
        seen.add(ex_id)
        if not (question or "").strip():
            problems.append(f"{shown_id(ex_id)}: empty question")
        if not (context or "").strip():
            problems.append(f"{shown_id(ex_id)}: empty context")
            continue
        if not check_answers:
            continue
        texts, starts = answers["text"], answers["answer_start"]
        if len(texts) != len(starts):
            problems.append(f"{shown_id(ex_id)}: {len(texts)} answer texts but {len(starts)} answer_start values")
            continue
        if not texts and not version_2_with_negative:
            problems.append(f"{shown_id(ex_id)}: no answer, but version_2_with_negative is false "
                            "(SQuAD v1 needs answers)")
        for k, (text, start) in enumerate(zip(texts, starts), 1):
            if not text:
                problems.append(f"{shown_id(ex_id)}: answer {k} has empty text")
            elif start < 0 or context[start : start + len(text)] != text:
                # Where, not what: the data's own text is never quoted in an error (it may be
                # private, and it is in the file for whoever fixes it).
                at = context.find(text)
                where = f"the context has it at {at}" if at >= 0 else "the context does not contain it"
                problems.append(f"{shown_id(ex_id)}: answer {k} ({len(text)} characters) not found at "
                                f"answer_start {start}; {where}")
    return problems


def validate_examples(examples: datasets.Dataset, version_2_with_negative: bool, source: str) -> None:
    """Raise one `DataError` listing every problem, or return quietly."""
    if len(examples) == 0:
        raise DataError(source, ["no examples"])
    problems = find_problems(examples, version_2_with_negative)
    if problems:
        raise DataError(source, problems)


def validate_questions(examples: datasets.Dataset, source: str) -> None:
    """As `validate_examples`, for questions to answer: ids unique, no question or context empty;
    answers, where there are any, are neither needed nor checked."""
    problems = ["no questions"] if len(examples) == 0 else find_problems(examples, True, check_answers=False)
    if problems:
        raise DataError(source, problems)


def check_model_source(model: str) -> None:
    """Fail early on a model reference that cannot work: a missing folder, unreadable weights, no
    fast tokenizer or one without its vocabulary."""
    from qa_lib.modeling import check_encoder_weights, load_tokenizer, resolve_model

    resolved = resolve_model(model)
    path = Path(resolved)
    if model.startswith((".", "/", "~")) or path.suffix or path.exists():
        if not path.is_dir():
            raise ModelError(f"model folder not found: {model}")
        if not (path / "config.json").exists():  # an s3:// model's download (resolve_model checks local ones)
            raise ModelError(f"{model}: not a model folder (no config.json)")
        check_weights(model, path)
    check_qa_architecture(model, resolved)
    if path.is_dir():
        check_encoder_weights(model, resolved)
    tokenizer = load_tokenizer(resolved)
    config_file = path / "config.json"
    if config_file.exists():
        vocab_size = json.loads(config_file.read_text()).get("vocab_size")
        if vocab_size and len(tokenizer) > vocab_size:
            raise ModelError(f"{model}: tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab_size}")


def check_weights(model: str, folder: Path) -> None:
    """Weights that cannot be loaded fail here, not after the features are built: none at all, a
    shard its index lists but the folder lacks, a truncated or corrupt file (an interrupted copy or
    download). Only headers are read: a safetensors header, a zip's directory."""
    import zipfile

    from safetensors import safe_open

    safetensors = sorted(folder.glob("*.safetensors"))
    pickles = sorted(folder.glob("pytorch_model*.bin"))
    if not safetensors and not pickles:
        raise ModelError(f"{model}: no weights in the folder (model.safetensors or pytorch_model.bin)")
    for index in sorted(folder.glob("*.index.json")):
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ModelError(f"{index}: not a readable weights index (JSON with a 'weight_map')") from None
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise ModelError(f"{index}: {len(missing)} of its {len(shards)} shards are missing, the first: {missing[0]}")
    for file in safetensors:
        try:
            with safe_open(str(file), "pt"):
                pass
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for every flaw
            first = first_line(exc, 200)
            raise ModelError(f"{file}: cannot read these weights ({first}); the file is truncated or corrupt") from None
    for file in pickles:
        with file.open("rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"  # torch.save's format since 1.6; older files are plain pickles
        if zipped:
            try:
                with zipfile.ZipFile(file):
                    pass
            except (zipfile.BadZipFile, OSError):
                raise ModelError(f"{file}: cannot read these weights (a damaged zip archive); the file is truncated "
                                 "or corrupt") from None


def _model_config(resolved: str, model: str | None = None):
    """A model folder's (or Hub id's) config, read once for all of preflight's checks; one that cannot
    be read is a ModelError naming `model` (the reference as the user gave it), never an OSError."""
    try:
        return _read_model_config(resolved)
    except Exception as exc:  # noqa: BLE001 - an unknown model_type, an unreadable config.json
        first = first_line(exc)
        raise ModelError(f"cannot load the configuration of model {model or resolved!r}: {first}") from None


@functools.lru_cache(maxsize=8)
def _read_model_config(resolved: str):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolved)


def check_qa_architecture(model: str, resolved: str) -> None:
    """A model whose architecture transformers cannot give a question-answering head, refused by name."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES

    config = _model_config(resolved, model)
    if config.model_type not in MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES:
        raise ModelError(f"{model}: a {config.model_type!r} model has no question-answering head in transformers "
                         "(AutoModelForQuestionAnswering takes e.g. bert, roberta, xlm-roberta, deberta-v2, "
                         "electra, xlnet, modernbert)")


def check_activation_checkpointing(model: str) -> None:
    """`activation_checkpointing: true` for an architecture whose code cannot recompute its layers,
    refused by name before any data is read (the Trainer would fail once training starts)."""
    model_type, cls = _qa_model_class(model)
    if cls is not None and not getattr(cls, "supports_gradient_checkpointing", False):
        raise ConfigError(f"activation_checkpointing: {model_type} models ({cls.__name__}) do not support it; "
                          "set activation_checkpointing: false")


def _qa_model_class(model: str) -> tuple[str, type | None]:
    """`model`'s type and the class AutoModelForQuestionAnswering would build, from its config alone."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES

    from qa_lib.modeling import resolve_model

    config = _model_config(resolve_model(model), model)
    name = MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES.get(config.model_type)
    return config.model_type, getattr(transformers, name, None) if name else None


# Why a model class cannot take packed rows whatever its numbers: it builds its own masks from a 2D one.
NO_ATTENTION_BACKEND = "its attention is not built on transformers' AttentionInterface, which a packed row's mask needs"


def packing_refused(model_class: type) -> str | None:
    """`NO_ATTENTION_BACKEND` for a QA model class packed rows cannot work with, else None."""
    return None if getattr(model_class, "_supports_attention_backend", False) else NO_ATTENTION_BACKEND


def check_packed_batches(model: str) -> None:
    """`batching: packed` for an architecture that cannot take packed rows (XLNet, DeBERTa,
    Longformer...), refused by name before any data is read: it was found by the fine-tune task,
    after the features were built. Whether packed logits match padded ones needs the weights; the
    fine-tune task checks that."""
    model_type, cls = _qa_model_class(model)
    if cls is not None and (problem := packing_refused(cls)):
        raise ConfigError(f"batching: packed does not work with {model_type} models ({problem}); use padded or auto")


# Models that number positions from pad_token_id + 1 (fairseq's convention): 514 embeddings, 512 tokens.
_POSITIONS_AFTER_PAD = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer",
                        "roberta-prelayernorm", "xmod", "data2vec-text", "ibert", "mpnet", "luke"}
# ...where padding_idx is fixed in the model's code, whatever the config's pad_token_id says.
_FIXED_PADDING_IDX = {"mpnet": 1}


def max_window(model: str) -> int | None:
    """The longest window `model` can take, from its position embeddings (None: relative positions, no limit)."""
    from qa_lib.modeling import resolve_model

    config = _model_config(resolve_model(model), model)
    positions = getattr(config, "max_position_embeddings", None)
    relative = getattr(config, "position_biased_input", True) is False or config.model_type in ("xlnet",)
    if not positions or relative:
        return None
    if config.model_type in _POSITIONS_AFTER_PAD:
        padding_idx = _FIXED_PADDING_IDX.get(config.model_type, getattr(config, "pad_token_id", None) or 0)
        positions -= padding_idx + 1
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
    # Older checkpoints: `pytorch_model.bin` or its shards (not a Trainer folder's training_args.bin).
    pickled = [] if weights or not folder.is_dir() else sorted(folder.glob("pytorch_model*.bin"))
    if not weights and not pickled:
        return  # no weights of either kind: the model loader says what is wrong
    with torch.device("meta"):  # shapes only: no memory, no time
        qa_model = AutoModelForQuestionAnswering.from_config(_model_config(str(folder)))
    prefix = qa_model.base_model_prefix + "."
    head = [k for k in qa_model.state_dict() if not k.startswith(prefix)]
    stored: set[str] = set()
    for file in weights:
        with safe_open(str(file), "pt") as f:
            stored.update(f.keys())
    for file in pickled:
        try:  # the names only: mapped, not read, and no tensor made (meta)
            stored.update(torch.load(file, map_location="meta", weights_only=True, mmap=True))
        except Exception:  # noqa: BLE001 - a pre-zip pickle cannot be mapped (check_weights named damaged ones)
            return  # as before: the model loader warns of a missing head
    if head and not any(k in stored for k in head):
        raise ModelError(f"{model}: its weights hold no question-answering head ({', '.join(head)}); it is a base "
                         "model, and its answers would be noise: fine-tune it first (qa-pipeline train)")


def check_output_apart_from_store(output_dir: str, store_root: Path) -> None:
    """publish-local swaps whole folders into output_dir (model/, predictions/, evaluation/). With
    output_dir the store itself, those are the store's own stage folders, and every trained model
    and prediction in the store was replaced by one run's files; inside the store, or with the store
    under one of them, the same risk in other shapes."""
    out, root = Path(output_dir).expanduser().resolve(), Path(store_root).resolve()
    swapped = [out / name for name in ("model", "predictions", "evaluation")]
    if out == root or root in out.parents or any(p == root or p in root.parents for p in swapped):
        raise ConfigError(f"output_dir {output_dir} and the store {root} overlap: publishing would replace the "
                          "store's own folders; give them separate folders (output_dir may hold the store, as "
                          "output_dir/.qa-store, but not be it or be inside it)")


def check_output_dir(output_dir: str) -> None:
    """Fail before training, not after it, when the results could not be written."""
    from qa_lib.folders import write_problem

    if problem := write_problem(Path(output_dir).expanduser(), keep=False):  # the run makes it when it writes
        raise ConfigError(f"output_dir: cannot write to {output_dir}: {problem}")
