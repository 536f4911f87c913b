"""`qa-pipeline answer`: one question about one context, or every question of a file, answered by a
trained model."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def run(args) -> int:
    from qa_lib.progress import notices_printed

    # A model downloaded from an S3 store or target, or the Hub, can take minutes: said as it starts.
    with notices_printed():
        return _run(args)


def _run(args) -> int:
    from qa_lib.answer_inputs import checked_inputs
    from qa_lib.errors import ConfigError
    from qa_lib.modeling import resolve_model

    one = args.question is not None or args.context is not None or args.context_file is not None
    if args.questions is not None:
        if one:
            raise ConfigError("answer: --questions answers a file; it takes no --question, --context or --context-file")
        return run_file(args)
    if option := "--output" if args.output is not None else "--dry-run" if args.dry_run else source_options_given(args):
        raise ConfigError(f"answer: {option} goes with --questions (one answer is printed)")
    if args.question is None or (args.context is None and args.context_file is None):
        raise ConfigError("answer: give --question and --context (or --context-file), or --questions FILE")
    check_options(args)
    context = args.context if args.context is not None else read_context(args.context_file)
    checked_inputs(args.question, context, args.top_k, args.max_answer_len)
    # A missing local folder is named here too (an s3:// model is downloaded once its inputs pass).
    model = args.model if args.model.startswith("s3://") else resolve_model(args.model)
    # Only now the model libraries (~10 s to import): the options, inputs and folder have passed.
    from transformers.utils import logging as hf_logging

    from qa_lib.answer import answer
    from qa_lib.validate import check_trained_head

    # As with --questions and evaluate: a base model's random head would give a confident-looking
    # answer that means nothing (the library's QuestionAnswerer only warns, for experiments).
    check_trained_head(model)
    # One model load for one answer: its "Loading weights" bar is only noise before the JSON.
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        result = answer(model, args.question, context, top_k=args.top_k,
                        max_answer_len=args.max_answer_len, handle_impossible_answer=args.handle_impossible_answer,
                        max_length=args.max_length, doc_stride=args.doc_stride, batch_size=args.batch_size,
                        precision=args.precision, progress=None)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    items = result if isinstance(result, list) else [result]
    print_json([a.to_dict() for a in items] if args.top_k > 1 else items[0].to_dict())
    return 0


# The library names its arguments; on the command line the error names the option that was typed.
_OPTION_NAMES = {"top_k": "--top-k", "max_answer_len": "--max-answer-len", "batch_size": "--batch-size",
                 "max_length": "--max-length", "doc_stride": "--doc-stride", "precision": "--precision"}


def check_options(args) -> None:
    """The numeric options and --precision, checked before any file is read or model looked for, and
    before torch is imported unless --precision names a GPU's (fp16, bf16: torch says if there is one)."""
    import re

    from qa_lib.answer_inputs import check_answer_options, check_run_values
    from qa_lib.errors import ConfigError

    try:
        check_answer_options(args.top_k, args.max_answer_len)
        check_run_values(args.batch_size, args.precision, args.max_length, args.doc_stride)
        if args.precision in ("fp16", "bf16"):
            from qa_lib.predict import resolve_precision

            resolve_precision(args.precision)
    except ConfigError as exc:
        pattern = r"\b(" + "|".join(_OPTION_NAMES) + r")\b"
        raise ConfigError(re.sub(pattern, lambda m: _OPTION_NAMES[m.group(1)], str(exc))) from None


def column_option(items: list[str], command: str) -> dict[str, str]:
    """`--column ours=theirs`, repeated: our column names mapped to a data file's own."""
    from qa_lib.config import column_name_problem
    from qa_lib.errors import ConfigError

    columns = {}
    for item in items:
        ours, _, theirs = (part.strip() for part in item.partition("="))
        if not (ours and theirs):
            raise ConfigError(f"{command}: --column {item!r} is not of the form ours=theirs (e.g. question=query)")
        if problem := column_name_problem(ours):
            raise ConfigError(f"{command}: --column {item!r}: {problem}")
        columns[ours] = theirs
    return columns


def source_options_given(args) -> str | None:
    """The first of --column, --split and --subset given, if any: they describe a data source."""
    given = [name for name, value in (("--column", args.column), ("--split", args.split), ("--subset", args.subset))
             if value]
    return given[0] if given else None


def data_source(path: str, args, command: str):
    """The `DataSource` that `path` and the --column, --split and --subset options describe."""
    from qa_lib.config import DataSource

    return DataSource(path=path, columns=column_option(args.column, command), split=args.split, subset=args.subset)


def run_file(args) -> int:
    """Every question of `args.questions`: the options, the output's place and a local model folder
    are checked first, then the file is read and checked, and only then the model loaded; the
    output (a file, or an `s3://` object) is written whole or not at all."""
    from qa_lib.modeling import resolve_model
    from qa_lib.outputs import check_output, save_output

    check_options(args)
    source = data_source(args.questions, args, "answer")
    if args.output is not None:
        check_output(args.output, "answers", keep=not args.dry_run)
    # A missing local folder is named before a long file is read; an s3:// model's download waits
    # until the file has passed.
    model_dir = None if args.model.startswith("s3://") else resolve_model(args.model)
    # Only now the data and model libraries (~10 s to import): the options and places have passed.
    from qa_lib.answer import QuestionAnswerer, answer_all
    from qa_lib.data import load_questions
    from qa_lib.errors import DataError
    from qa_lib.features import check_questions_fit
    from qa_lib.modeling import load_tokenizer
    from qa_lib.progress import configure_progress
    from qa_lib.validate import check_model_source, check_trained_head, check_windows_fit

    configure_progress()  # QA_PIPELINE_NO_PROGRESS=1 quiets datasets' bars too, as the flows do
    examples = load_questions(source)
    model_dir = model_dir or resolve_model(args.model)
    try:  # with the tokenizer alone: a question too long for the window is named before the weights load
        check_questions_fit(examples, load_tokenizer(model_dir), args.max_length)
    except DataError as exc:
        raise DataError(args.questions, exc.problems) from None
    # What evaluate's preflight asks of a model, short of loading it: weights readable, a QA
    # architecture, a trained head (a file of answers from a random head is noise), the window
    # within its positions. The dry run stops after the same checks.
    check_model_source(model_dir)
    check_trained_head(model_dir)
    check_windows_fit(model_dir, {"max_length": args.max_length})
    if args.dry_run:
        print(f"dry run: every check passed; nothing was answered.\n"
              f"  questions  {args.questions} ({len(examples):,}, valid)\n"
              f"  model      {model_dir}\n"
              f"  output     {args.output or 'stdout'}")
        return 0
    qa = QuestionAnswerer(model_dir, max_length=args.max_length, doc_stride=args.doc_stride,
                          batch_size=args.batch_size, precision=args.precision)
    from qa_lib.cpu_precision import cpu_bf16_advice

    if advice := cpu_bf16_advice(args.precision, training=False):  # a file's worth of windows
        print(f"warning: {advice[1]}", file=sys.stderr)
    print(f"answering {len(examples):,} questions with {qa.model_dir}", file=sys.stderr)
    answers = answer_all(qa, examples, top_k=args.top_k, max_answer_len=args.max_answer_len,
                         handle_impossible_answer=args.handle_impossible_answer)
    if args.output is None:
        print_json(answers, indent=1)
        return 0
    save_output(args.output, json.dumps(answers, ensure_ascii=False, indent=1))
    print(f"{len(answers):,} answers written to {args.output}", file=sys.stderr)
    return 0


def print_json(value, indent: int | None = None) -> None:
    """Answers as UTF-8 JSON, or with JSON's own \\u escapes (the same data) where stdout cannot take
    them (PYTHONIOENCODING=ascii, a Latin-1 terminal): a whole file's answers must not be lost to an
    UnicodeEncodeError at the last step."""
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    try:
        text.encode(sys.stdout.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        text = json.dumps(value, ensure_ascii=True, indent=indent)
    print(text)


def read_context(name: str) -> str:
    """A context from a file or stdin, checked as UTF-8 like every data file (no bytes echoed)."""
    from qa_lib.errors import DataError
    from qa_lib.text_files import read_utf8

    if name == "-":
        if sys.stdin.isatty():  # typed, not piped: without a word, the wait for it looked like a hang
            print("answer: reading the context from the terminal; end it with Ctrl-D on a line of its own",
                  file=sys.stderr)
        data = sys.stdin.buffer.read()
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError("stdin", [f"not UTF-8 (byte offset {exc.start})"]) from None
    path = Path(name).expanduser()
    if path.is_dir():
        raise DataError(name, ["a folder; give the text file that holds the context"])
    if not path.is_file():
        raise DataError(name, ["file not found"])
    return read_utf8(path)
