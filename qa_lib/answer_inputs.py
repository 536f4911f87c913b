"""What answering is given (questions, contexts, window, batch, precision, answers per question;
answer_qa's questions, model and output), checked without torch: a mistyped option, an empty
question or a missing file is named in a second, not after the ~10 s import of the model
libraries that answering itself needs."""

from __future__ import annotations

from pathlib import Path

from qa_lib.config import DataSource, PipelineConfig, check_precision_name
from qa_lib.errors import ConfigError, DataError

# As the pipeline's evaluation does by default: the same window, batch and precision give the
# same answers the evaluation scored (on a GPU, bf16 and fp32 can pick different spans).
WINDOW = PipelineConfig.model_fields["eval_max_length"].default
STRIDE = PipelineConfig.model_fields["eval_doc_stride"].default
BATCH = PipelineConfig.model_fields["per_device_eval_batch_size"].default
PRECISION = PipelineConfig.model_fields["precision"].default


def checked_inputs(question: str | list[str], context: str | list[str], top_k: int,
                   max_answer_len: int) -> tuple[list[str], list[str]]:
    """The questions and their contexts as lists, or the error that makes them unanswerable."""
    check_answer_options(top_k, max_answer_len)
    questions = [question] if isinstance(question, str) else list(question)
    contexts = [context] * len(questions) if isinstance(context, str) else list(context)
    if len(questions) != len(contexts):
        raise DataError("answer", [f"{len(questions)} questions but {len(contexts)} contexts"])
    # As the transformers question-answering pipeline did: an empty input is an error, not a guess.
    empty = [f"the {name} is empty" if isinstance(given, str) else f"{name} {i} is empty"  # a list's: by position
             for i, (q, c) in enumerate(zip(questions, contexts))
             for name, text, given in (("question", q, question), ("context", c, context)) if not (text or "").strip()]
    if empty:
        raise DataError("answer", empty)
    return questions, contexts


def check_answer_options(top_k: int, max_answer_len: int) -> None:
    for name, value in (("top_k", top_k), ("max_answer_len", max_answer_len)):
        if value < 1:
            raise ConfigError(f"{name} ({value}) must be at least 1")


def check_run_values(batch_size: int, precision: str, max_length: int = WINDOW, doc_stride: int = STRIDE) -> None:
    """The window, batch size and precision name; whether this machine can run that precision is
    `qa_lib.predict.resolve_precision`'s to say (it asks torch)."""
    if max_length < 1:
        raise ConfigError(f"max_length ({max_length}) must be at least 1")
    if not 0 <= doc_stride < max_length:
        raise ConfigError(f"doc_stride ({doc_stride}) must be at least 0 and smaller than max_length ({max_length})")
    if batch_size < 1:
        raise ConfigError(f"batch_size ({batch_size}) must be at least 1")
    check_precision_name(precision)


def questions_config(config: PipelineConfig, questions: DataSource | dict | str | None) -> PipelineConfig:
    """`config` with the questions to answer as its eval set (the answer_qa flow answers the eval
    set's questions when it is given none), checked as the config is: one line naming a bad field."""
    if questions is None:
        if config.eval_data is None:
            raise ConfigError("questions: give a questions file (or set eval_data in the config)")
        return config
    if isinstance(questions, str):
        questions = {"path": questions}
    elif isinstance(questions, DataSource):
        questions = questions.model_dump()
    try:
        return PipelineConfig.parse({**config.model_dump(), "eval_data": questions}, where="the run's parameters")
    except ConfigError as exc:  # named as the parameter the caller set
        raise ConfigError(str(exc).replace("eval_data.", "questions.")) from None


def default_answer_model(config: PipelineConfig) -> str:
    """The model answer_qa uses when it is named none: the champion of the config's publish_target
    (what retrain promotes), else `config.model`."""
    from qa_lib.publish.run import champion_reference

    return champion_reference(config.publish_target) if config.publish_target else config.model


def answers_dir(config: PipelineConfig) -> Path:
    """Where answer_qa keeps its summary, and its answers when it is given no output."""
    return Path(config.output_dir).expanduser().resolve() / "answers"


def default_answers_output(config: PipelineConfig) -> str:
    return str(answers_dir(config) / "predictions.json")
