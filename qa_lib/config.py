"""The pipeline configuration: every knob, each with its one default.

Loaded from YAML (`PipelineConfig.from_yaml`) and overridable with dotted `key=value` pairs
(`apply_overrides`), so the CLI, the Prefect UI form and code all share these defaults.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Collection, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qa_lib.errors import ConfigError
from qa_lib.text_files import read_utf8

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

Precision = Literal["auto", "bf16", "fp16", "fp32"]
Batching = Literal["auto", "padded", "packed"]
Switch = Literal["auto", "on", "off"]
PackedAttention = Literal["mask", "varlen"]
# The Trainer's schedules that need no extra arguments; checked here so that a typo fails at load,
# not after the features are built.
Scheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                    "inverse_sqrt"]


def check_precision_name(precision: str) -> None:
    """For code that takes a precision without a config (which checks it as it is read)."""
    if precision not in get_args(Precision):
        raise ConfigError(f"precision: {precision!r} is not one of {', '.join(get_args(Precision))}")


# `qa-pipeline answer` and `qa_lib.answer`: the longest answer in tokens, as transformers'
# question-answering pipeline had it (the pipeline's own `max_answer_length` is for evaluation).
MAX_ANSWER_LEN = 15


class _Strict(BaseModel):
    # Unknown keys are typos more often than not: refuse them instead of ignoring them.
    # NaN and infinity pass no bound and compare false with everything: a `.nan` threshold would
    # silently answer every v2 question. Refuse them in every float field.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# Our names for a data source's columns, which `columns:` and `--column` map to the source's own:
# the SQuAD columns (what the loader returns, in this order), and a flat file's single answer as
# text and start.
SQUAD_COLUMNS = ("id", "title", "context", "question", "answers")
COLUMN_NAMES = (*SQUAD_COLUMNS, "answer_text", "answer_start")


def column_name_problem(name: str) -> str | None:
    """Why `name` cannot be mapped (it is none of `COLUMN_NAMES`), with the nearest one where a typo
    is likely; None if it can."""
    import difflib

    if name in COLUMN_NAMES:
        return None
    close = difflib.get_close_matches(name, COLUMN_NAMES, n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{name!r} is not one of our columns ({', '.join(COLUMN_NAMES)}){hint}"


class DataSource(_Strict):
    """Where examples come from.

    `path` is a Hub dataset name (`squad`, `squad_v2`), a local dataset folder, an official
    SQuAD JSON file, a flat JSONL/CSV/Parquet file, or an `s3://` URI.
    """

    path: str = Field(description="SQuAD JSON, JSONL/CSV/Parquet file (also .gz/.bz2/.xz), dataset folder, Hub dataset name "
                      "(squad, squad_v2; name@revision pins a branch, tag or commit) or s3://bucket/key.")
    split: str | None = Field(None, description="Split of a Hub/folder dataset (default: train or validation); "
                                                "a single file has none and refuses one.")
    subset: str | None = Field(None, description="Subset (configuration) of a Hub or folder dataset that has "
                                                 "several, e.g. xquad.en of google/xquad.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Map from our column names (id, title, context, question, answers, "
        "answer_text, answer_start) to the source's column names.",
    )
    limit: int | None = Field(None, gt=0, description="Keep only the first N examples.")

    @field_validator("columns")
    @classmethod
    def _our_columns(cls, columns: dict[str, str]) -> dict[str, str]:
        # A mistyped name (`qestion: query`) was found only once the data was read, in the run.
        for name in columns:
            if problem := column_name_problem(name):
                raise ValueError(problem)
        return columns

    @property
    def local_path(self) -> Path:
        """`path` as a local path, `~` expanded on the machine that reads it (not where the config
        was written: a deployment's config runs on a worker)."""
        return Path(self.path).expanduser()


def _valued_fields_required(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """In the run form, a field whose default is a value (not None) needs one to make sense: list
    it as required, so the form shows it pre-filled and not as "(Optional)". Code and YAML may still
    leave it out (its default applies): deployments do not make the API enforce this schema, and
    the flow validates its config itself, with one-line messages."""
    valued = [name for name, field in model.model_fields.items()
              if not field.is_required() and field.default_factory is None and field.default is not None]
    schema["required"] = sorted({*schema.get("required", []), *valued})


# Data sources, which may be written as their path alone (`PipelineConfig._path_alone`).
_SOURCE_FIELDS = ("train_data", "eval_data")


class PipelineConfig(_Strict):
    model_config = ConfigDict(json_schema_extra=_valued_fields_required)

    model: str = Field(DEFAULT_MODEL, description="Local model folder or Hub id (namespace/name; "
                       "namespace/name@revision pins a branch, tag or commit).")
    train_data: DataSource | None = Field(None, description="Training examples (required to train).")
    eval_data: DataSource | None = Field(
        None, description="Evaluation examples: scored after training, and the set the champion gate compares on.")
    version_2_with_negative: bool = Field(False, description="SQuAD v2: some questions have no answer.")

    # Windows
    max_length: int = Field(192, gt=0, description="Tokens per training feature (question + context window).")
    doc_stride: int = Field(64, ge=0, description="Tokens shared by consecutive training windows.")
    eval_max_length: int | None = Field(
        384, gt=0, description="Window for evaluation and prediction (None: max_length). Longer windows "
        "cost little at inference and split fewer contexts.")
    eval_doc_stride: int | None = Field(128, ge=0, description="Stride for evaluation windows (None: doc_stride).")
    num_proc: int | None = Field(None, ge=1, description="Processes for datasets.map.")
    drop_answerless_windows: bool = Field(
        True, description="SQuAD v1 training: skip windows that do not contain the answer (ignored for v2).")

    # Post-processing
    n_best_size: int = Field(20, gt=0, description="Start and end candidates per window considered for the "
                             "answer, and the length of each n-best list.")
    max_answer_length: int = Field(30, gt=0, description="Longest answer, in tokens.")
    null_score_diff_threshold: float = Field(
        0.0, description="SQuAD v2: answer 'no answer' when the null score beats the best span by more than this.")

    # Training
    learning_rate: float = Field(2e-4, gt=0, description="Peak AdamW learning rate.")
    num_train_epochs: float = Field(2.5, gt=0, description="Passes over the training features (fractions allowed).")
    per_device_train_batch_size: int = Field(16, gt=0, description="Training features per step on each device.")
    # Prediction batches are length-sorted, so a small batch adds little padding; on 2 CPU cores 16 rows
    # predicted Super_Bowl_50 in 16.8 s against 20.0 s for 64 (larger activations fall out of cache).
    per_device_eval_batch_size: int = Field(16, gt=0, description="Prediction batch size on each device.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Batches summed into one optimizer step.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of the steps spent warming the learning rate up.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    lr_scheduler_type: Scheduler = Field("linear", description="Learning-rate schedule after warm-up.")
    # Short fine-tuning runs gain little from dropout, and on the CPU its random masks cost about a
    # third of each step (the attention one is batch x heads x length^2): spend that on epochs.
    hidden_dropout: float | None = Field(
        0.0, ge=0, lt=1, description="Dropout between layers during fine-tuning (None: the model's own).")
    attention_dropout: float | None = Field(
        0.0, ge=0, lt=1, description="Dropout on attention probabilities during fine-tuning (None: the "
        "model's own).")
    freeze_word_embeddings: bool = Field(
        True, description="Keep the pretrained word-embedding table fixed during fine-tuning: a third "
        "of a small model's weights, and the AdamW update of that table every step.")
    activation_checkpointing: bool = Field(
        False, description="Gradient checkpointing: recompute each layer's activations in the backward pass "
        "instead of keeping them, about a third more compute for a fraction of the activation memory (large "
        "models, long windows or large batches on a small GPU). Same loss and gradients.")
    seed: int = Field(42, ge=0, lt=2**32,  # numpy's seeding range
                      description="Seeds the new QA head, data order and dropout: same config, same model.")
    precision: Precision = Field("auto", description="auto: bf16 on a GPU that has it, fp16 on an older GPU, fp32 "
                                 "on every CPU. bf16 on the CPU is CPU autocast: faster where the CPU has bf16 "
                                 "instructions (AVX512-BF16, AMX), slower where it emulates them; fp16 needs a GPU.")
    batching: Batching = Field(
        "auto", description="Training batches. padded: each feature in its own row, padded to the batch's "
        "longest (length-grouped). packed: features end to end in rows of a fixed width, a fixed token budget "
        "per step, no padding but each row's tail. auto: packed on a CUDA GPU when the model gives the same "
        "logits packed as padded, padded otherwise (and on the CPU, where it measured faster).")
    tokens_per_batch: int | None = Field(
        None, gt=0, description="Packed batches: tokens per step on each device, rounded up to whole rows of "
        "twice max_length (None: per_device_train_batch_size times the features' mean length, the same "
        "features per step on average as padded batches).")
    packed_attention: PackedAttention = Field(
        "mask", description="How packed batches keep their features apart. mask: a block-diagonal mask with "
        "the model's own attention, every row's query/key pairs computed. varlen: each feature attends within "
        "itself only (PyTorch's flash varlen kernel on a CUDA GPU in bf16/fp16; an exact per-feature loop "
        "elsewhere, slow); needs attention dropout 0 and a model whose attention goes through transformers' "
        "AttentionInterface (BERT, RoBERTa, XLM-R, ELECTRA...). Not measured on a GPU yet, hence not the default.")
    compile: Switch = Field(
        "auto", description="torch.compile the model for training. auto: on for packed batches on a CUDA GPU "
        "(fixed shapes, so it compiles once), off otherwise.")
    save_steps: int = Field(200, gt=0, description="Checkpoint interval, in optimizer steps.")
    save_total_limit: int = Field(2, gt=0, description="Checkpoints kept; older ones are deleted.")
    logging_steps: int = Field(20, gt=0, description="Loss logged (and the progress artifact updated) every N steps.")
    max_steps: int = Field(-1, description="Stop after N optimizer steps (-1: run all epochs).")

    output_dir: str = Field("runs/default", description="Local folder where the trained model and results go (for "
                            "S3: the store or publish_target).")

    # Publishing (retrain flow)
    publish_target: str | None = Field(None, description="Folder or s3://bucket/prefix for runs and champion.json, "
                                       "where retrain publishes (train publishes nowhere, and says so).")
    promote_metric: Literal["f1", "exact", "exact_match", "best_f1"] = Field(
        "f1", description="Metric the champion gate compares (retrain). exact and exact_match are the same score "
        "(v2.0's and v1.1's names); best_f1 needs SQuAD v2.")
    promote_margin: float = Field(0.0, description="Promote only if better than the champion by this much.")
    hub_repo_id: str | None = Field(
        None, description="Also push each promoted champion to this Hugging Face Hub model repo (org/name); "
        "token from HF_TOKEN or the Prefect Secret block 'hf-token', checked before training.")
    hub_private: bool = Field(True, description="Create the Hub repo as private if it does not exist yet.")

    @field_validator(*_SOURCE_FIELDS, mode="before")
    @classmethod
    def _path_alone(cls, value: Any) -> Any:
        # `eval_data: data/dev.json` names the file as plainly as a user writes it; it was refused
        # as "not a valid dictionary".
        return {"path": value} if isinstance(value, str) else value

    @field_validator("compile", mode="before")
    @classmethod
    def _yaml_switch(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted `on` / `off` as a boolean: `compile: on` must still mean "on".
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("output_dir")
    @classmethod
    def _local_folder(cls, value: str) -> str:
        # `output_dir: s3://bucket/run` made a local folder named `s3:` and wrote the run there.
        if "://" in value:
            raise ValueError("a URI, not a local folder (for S3, give --store or publish_target an s3:// URI)")
        return value

    @field_validator("hub_repo_id")
    @classmethod
    def _hub_repo_id(cls, value: str | None) -> str | None:
        if value is not None:
            from qa_lib.publish.hub import repo_id_problem

            if problem := repo_id_problem(value):
                raise ValueError(problem)  # reported with the field named
        return value

    @model_validator(mode="after")
    def _coherent(self) -> PipelineConfig:
        if self.doc_stride >= self.max_length:
            raise ValueError(
                f"doc_stride ({self.doc_stride}) must be smaller than max_length ({self.max_length})"
            )
        if self.eval_window[1] >= self.eval_window[0]:
            raise ValueError(f"eval_doc_stride ({self.eval_window[1]}) must be smaller than "
                             f"eval_max_length ({self.eval_window[0]})")
        if self.max_answer_length > self.eval_window[0]:
            raise ValueError(f"max_answer_length ({self.max_answer_length}) is longer than the evaluation window "
                             f"(eval_max_length {self.eval_window[0]} tokens): no answer can be that long")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 or positive, got {self.max_steps}")
        if self.promote_metric == "best_f1" and not self.version_2_with_negative:
            raise ValueError("promote_metric best_f1 is a SQuAD v2 score (version_2_with_negative: true); "
                             "use f1 or exact_match")
        return self

    @property
    def promote_key(self) -> str:
        """`promote_metric` as this config's SQuAD version names it in the metrics: v1.1's official
        script says `exact_match` and v2.0's `exact` for the same score; either name is accepted."""
        if self.promote_metric in ("exact", "exact_match"):
            return "exact" if self.version_2_with_negative else "exact_match"
        return self.promote_metric

    @property
    def eval_window(self) -> tuple[int, int]:
        return (self.eval_max_length or self.max_length,
                self.doc_stride if self.eval_doc_stride is None else self.eval_doc_stride)

    @property
    def drop_answerless(self) -> bool:
        return self.drop_answerless_windows and not self.version_2_with_negative

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
        path = Path(path)
        try:
            raw = yaml.load(read_utf8(path), Loader=_UniqueKeyLoader) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: a folder, not a config file (give a YAML file such as configs/default.yaml)") from None
        except PermissionError:
            raise ConfigError(f"{path}: the config file cannot be read (permission denied)") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML{_yaml_where(exc)}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        overridden = apply_overrides(raw, overrides or [])
        return cls.parse(raw, where=str(path), overridden=overridden)

    @classmethod
    def coerce(cls, value: PipelineConfig | dict[str, Any],
               where: str = "the run's config parameter") -> PipelineConfig:
        """A config as a flow receives it: already one, or the JSON a deployment run was given."""
        return value if isinstance(value, cls) else cls.parse(dict(value or {}), where=where)

    @classmethod
    def parse(cls, raw: dict[str, Any], where: str = "config", overridden: Collection[str] = ()) -> PipelineConfig:
        """`overridden`: keys set by overrides on top of `where`; a bad value there is named as the
        override, since the user would look for it in `where` in vain."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            first = ".".join(str(p) for p in error["loc"])
            # A cross-field check has no field of its own: it names the fields in its message.
            # The override may also have set a key inside the field that failed (columns.qestion=...).
            key = next((k for k in overridden if first == k or first.startswith(k + ".")
                        or first and k.startswith(first + ".")
                        or not first and re.search(rf"\b{re.escape(k)}\b", error["msg"])), None)
            raise ConfigError(_explain(exc, f"the override {key}=... (on top of {where})" if key else where)) from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> list[str]:
    """Apply `a.b=value` overrides to `raw` in place; values are parsed as YAML scalars. Returns the
    keys set."""
    keys = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for depth, part in enumerate(parts[:-1]):
            if depth == 0 and part in _SOURCE_FIELDS and (node.get(part) is None or isinstance(node[part], str)):
                # `eval_data: dev.json` (the path alone) then `eval_data.split=...`: open it up.
                node[part] = {} if node.get(part) is None else {"path": node[part]}
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a mapping")
        node[parts[-1]] = yaml.safe_load(value) if value != "" else None
        keys.append(key.strip())
    return keys


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping: YAML's last-one-wins would silently
    drop the first `learning_rate:` of two, and the run would train with a value nobody chose."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged by the base class
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_where(exc: yaml.YAMLError) -> str:
    """Line, column and the parser's complaint, without pyyaml's echo of the offending line."""
    mark = getattr(exc, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None)
    return f"{at}: {problem}" if problem else at


def _explain(exc: ValidationError, where: str) -> str:
    """One line naming the field (the first of several, with the rest listed below it)."""
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":  # pydantic's "Extra inputs are not permitted"
            msg = _unknown_key(err["loc"])
        problems.append(f"{field}: {msg}" if field else msg)  # a check across fields names them itself
    if len(problems) == 1:
        return f"invalid configuration in {where}: {problems[0]}"
    return (f"invalid configuration in {where}: {len(problems)} problems, the first: {problems[0]}\n  "
            + "\n  ".join(problems))


def _unknown_key(loc: tuple) -> str:
    """"unknown key", with the nearest known key where a typo is likely (`lerning_rate`)."""
    import difflib
    import typing

    model: type[BaseModel] = PipelineConfig
    for part in loc[:-1]:  # down to the model the key was given in (train_data.lmit: DataSource)
        field = model.model_fields.get(part) if isinstance(part, str) else None
        nested = [] if field is None else [t for t in (field.annotation, *typing.get_args(field.annotation))
                                           if isinstance(t, type) and issubclass(t, BaseModel)]
        if not nested:
            return "unknown key"
        model = nested[0]
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.75)
    if not close:
        return "unknown key (every key: docs/configuration.md)"
    return f"unknown key; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])}?"
