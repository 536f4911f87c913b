"""Cheap checks that fail a run before any expensive work, and what a run would do.

`check_run` is the flows' first step (`tasks.preflight`) and the CLI's `--dry-run`, cheapest first:
the config's cross-checks, the output folder, that every data source exists (before any is read),
the store (a request or two), the precision on this machine (the first to import torch), and the
model (loadable, windows that fit it, a trained head to evaluate: seconds, as it loads the model).
`check_data` (the dry run's, as the run's load and feature stages would) reads and validates the data
sources and checks that each question fits its window;
`planned_stages` then says, per stage, whether the store already holds it (the run will reuse
it) or the run would compute it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qa_lib.config import PipelineConfig
from qa_lib.errors import ConfigError
from qa_lib.sources import check_source_exists
from qa_lib.store import open_store
from qa_lib.validate import (check_activation_checkpointing, check_model_source, check_output_apart_from_store,
                             check_output_dir, check_packed_batches, check_trained_head, check_windows_fit)


def check_run(config: PipelineConfig, training: bool, model: str | None = None, store: str | None = None) -> None:
    """Raise the first problem found, as a `QAPipelineError` naming it."""
    if training and config.train_data is None:
        raise ConfigError("train_data: required to train (set train_data.path)")
    if config.eval_data is None and not training:
        raise ConfigError("eval_data: required to evaluate (set eval_data.path)")
    check_output_dir(config.output_dir)
    if not (storage := open_store(store)).remote:
        check_output_apart_from_store(config.output_dir, storage.root)
    # Every source before any is read, and before torch is imported and the model's weights loaded
    # (seconds): a mistyped path must not wait for them, nor a missing eval file for the training set.
    for source in (config.train_data if training else None, config.eval_data):
        if source is not None:
            check_source_exists(source)
    if store is not None:
        # A missing bucket, bad credentials, an unreachable endpoint or a folder that cannot be written
        # fail here, in one line: a request or two, so before torch is imported and the model loaded.
        storage.check()
    if config.precision in ("fp16", "bf16"):  # the others always resolve: torch (seconds) is not imported for them
        from qa_lib.predict import resolve_precision

        resolve_precision(config.precision)  # fp16 on a machine without a GPU fails here, not after the features
    check_model_source(model or config.model)
    windows = {"eval_max_length": config.eval_window[0]}
    if training:
        windows["max_length"] = config.max_length
        if config.activation_checkpointing:
            check_activation_checkpointing(model or config.model)
        if config.batching == "packed":
            check_packed_batches(model or config.model)
    else:
        check_trained_head(model or config.model)
    check_windows_fit(model or config.model, windows)


def unpublished_settings(config: PipelineConfig) -> str | None:
    """What a train run says when the config names places to publish to: one config often serves
    train and retrain, and a train run that finished without the push its config seemed to ask
    for was a surprise found only on the Hub."""
    named = [key for key in ("publish_target", "hub_repo_id") if getattr(config, key)]
    if not named:
        return None
    return (f"train publishes nowhere; {' and '.join(named)} {'are' if len(named) > 1 else 'is'} retrain's, which "
            f"gates the model against the champion, promotes it and pushes it (qa-pipeline retrain); this run's "
            f"model stays in {config.output_dir} and the store")


def check_answer_run(config: PipelineConfig, model: str, output: str, store: str | None = None) -> None:
    """What answering `config.eval_data`'s questions checks first: a champion to answer with, when
    the model is one; then `check_run`'s evaluation checks (a trained head, windows, precision, the
    output folder, the questions' source, the store) and the answers' output."""
    from qa_lib.outputs import check_output
    from qa_lib.publish.run import champion_reference, open_target

    if config.publish_target and model == champion_reference(config.publish_target):
        if open_target(config.publish_target).read_pointer()[0] is None:
            raise ConfigError(f"no champion in {config.publish_target} yet (retrain promotes one): name a model "
                              "to answer with")
    check_run(config, training=False, model=model, store=store)
    check_output(output, "answers")


def check_data(config: PipelineConfig, training: bool, skip: set[str] = frozenset(),
               model: str | None = None, keep: Callable[[str, Any], None] | None = None) -> dict[str, int]:
    """Load and validate each data source the run reads, as its first stages will, and check that
    every question leaves room for its context in the windows (a dry run's check: a truncated file,
    an answer that does not match its context or a question longer than the window is refused
    here, not after the dry run said yes). `skip` names the slots ("train_data", "eval_data")
    already in the store: checked when they were stored. `keep(slot, examples)` is given each source
    that passed. Returns the examples per slot checked."""
    from qa_lib.data import load_examples
    from qa_lib.features import check_questions_fit
    from qa_lib.modeling import load_tokenizer
    from qa_lib.validate import validate_examples

    counts, tokenizer = {}, None
    for slot, source, split, window in (
            ("train_data", config.train_data if training else None, "train", config.max_length),
            ("eval_data", config.eval_data, "validation", config.eval_window[0])):
        if source is None or slot in skip:
            continue
        examples = load_examples(source, default_split=split)
        validate_examples(examples, config.version_2_with_negative, source.path)
        tokenizer = tokenizer or load_tokenizer(model or config.model)
        check_questions_fit(examples, tokenizer, window)
        counts[slot] = len(examples)
        if keep is not None:
            keep(slot, examples)
    return counts


def check_and_keep_data(config: PipelineConfig, training: bool, model: str | None = None,
                        store: str | None = None) -> None:
    """`check_data` for a run about to start without a Prefect server (from the command line): bad
    data is then one line before Prefect starts a temporary server (seconds) and logs a failed task
    around it. Each source that passes is kept in the store under the run's key, where the run's
    load stage finds it: checked here, the data is not read a second time."""
    from qa_lib.plan import data_key

    sources = {"train_data": config.train_data if training else None, "eval_data": config.eval_data}
    keys = {slot: data_key(source, config.version_2_with_negative)
            for slot, source in sources.items() if source is not None}
    keep = _DataKeeper(keys, store)
    check_data(config, training, skip=set(sources) - set(keep.keys), model=model, keep=keep)


def check_and_keep_questions(config: PipelineConfig, model: str, store: str | None = None) -> None:
    """`check_and_keep_data` for answering `config.eval_data`'s questions (answer_qa)."""
    from qa_lib.plan import questions_key

    keep = _DataKeeper({"questions": questions_key(config.eval_data, config.version_2_with_negative)}, store)
    if keep.keys:
        keep("questions", _checked_questions(config, model))


class _DataKeeper:
    """Keeps a slot's checked examples in the store under its data key; `keys`: the slots it lacks."""

    def __init__(self, keys: dict[str, str], store: str | None):
        self.storage = open_store(store)
        self.keys = {slot: key for slot, key in keys.items() if not self.storage.has("data", key)}

    def __call__(self, slot: str, examples) -> None:
        from qa_lib.data import keep_examples

        keep_examples(self.storage, "data", self.keys[slot], examples)


def check_retrain_config(config: PipelineConfig) -> None:
    if not config.publish_target or config.eval_data is None:
        raise ConfigError("retrain needs publish_target and eval_data (the fixed eval set of the gate)")


def check_retrain(config: PipelineConfig, hub_token: str | None = None) -> None:
    """What retrain checks before it trains, besides `check_run`: its settings, then that the publish
    target and the Hub repo (if one is set) answer and can be written (with `hub_token`, else
    `HF_TOKEN`)."""
    from qa_lib.publish import hub
    from qa_lib.publish.run import open_target

    check_retrain_config(config)
    open_target(config.publish_target).check()
    if config.hub_repo_id:
        hub.check_access(config.hub_repo_id, token=hub_token)


def planned_stages(config: PipelineConfig, training: bool, model: str | None = None,
                   store: str | None = None) -> list[tuple[str, str, str, bool]]:
    """(slot, stage, key, stored) for each stage of the run, in run order. Reads the data files'
    bytes and the model's files to fingerprint them, nothing more."""
    from qa_lib.modeling import resolve_model
    from qa_lib.plan import run_keys

    return _stored_or_not(run_keys(config, resolve_model(model or config.model), training), store)


def planned_answer_stages(config: PipelineConfig, model: str, store: str | None = None
                          ) -> list[tuple[str, str, str, bool]]:
    """As `planned_stages`, for answering `config.eval_data`'s questions with `model` (answer_qa)."""
    from qa_lib.modeling import resolve_model
    from qa_lib.plan import answer_keys

    return _stored_or_not(answer_keys(config, resolve_model(model)), store)


def _stored_or_not(keys: dict[str, str], store: str | None) -> list[tuple[str, str, str, bool]]:
    from qa_lib.plan import STAGE_OF

    storage = open_store(store)
    return [(slot, STAGE_OF[slot], key, storage.has(STAGE_OF[slot], key)) for slot, key in keys.items()]


def check_questions(config: PipelineConfig, model: str) -> int:
    """The dry run's reading of the questions to answer (`config.eval_data`), as answer_qa's
    load-questions and feature stages would refuse them; returns how many there are."""
    return len(_checked_questions(config, model))


def _checked_questions(config: PipelineConfig, model: str):
    from qa_lib.data import load_questions
    from qa_lib.features import check_questions_fit
    from qa_lib.modeling import load_tokenizer

    examples = load_questions(config.eval_data)
    check_questions_fit(examples, load_tokenizer(model), config.eval_window[0])
    return examples
