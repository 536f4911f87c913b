"""`qa-pipeline train | evaluate | predict | retrain | score | answer | deploy | store`: the parser and the one
place errors become exit codes.

Errors the user can fix are printed as one message (exit code 2), not a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback

from cli import answer, runs, score, store
from cli.interrupts import announce_interrupted, bounded_interrupts, exit_on_terminate
from qa_lib.errors import QAPipelineError


class _PrintVersions(argparse.Action):
    """argparse's own version action wraps the line at the terminal's width."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_versions())
        parser.exit()


def _versions() -> str:
    """This package's version and the libraries' that decide its results: the line a bug report needs."""
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {of(name)}" for name in ("torch", "transformers", "tokenizers", "datasets", "prefect"))
    return f"qa-pipeline {of('qa-pipeline')} ({libraries})"


DRY_RUN_HELP = ("run every check a run makes first (config, model, data sources, output folder, store), load "
                "and validate the data not yet stored, list each stage as stored (reused) or to compute, and "
                "stop: nothing is trained")


def source_options(parser: argparse.ArgumentParser, when: str) -> None:
    """--split and --subset, for a command that reads a data folder or Hub dataset."""
    parser.add_argument("--split", default=None, help=f"{when}a data folder's or Hub dataset's split (default: "
                        "validation; a single file has none)")
    parser.add_argument("--subset", default=None, help=f"{when}a data folder's or Hub dataset's subset, for one "
                        "that has several (e.g. xquad.en)")


STORE_HELP = "content-addressed store root: a folder or s3://bucket/prefix (default: $QA_PIPELINE_STORE or .qa-store)"


def config_arguments(parser: argparse.ArgumentParser) -> None:
    """The config file and its overrides, as every flow command takes them."""
    parser.add_argument("config", help="YAML config file (every key: docs/configuration.md)")
    parser.add_argument("overrides", nargs="*", default=[],
                        help="key=value overrides, e.g. learning_rate=1e-4 eval_data.limit=100")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's default must not overwrite a --verbose given before it.
    common.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                        help="on failure, print the whole message and the traceback (default: one line)")
    p = argparse.ArgumentParser(prog="qa-pipeline", description="Fine-tune and evaluate extractive QA models.",
                                parents=[common])
    p.add_argument("--version", action=_PrintVersions, help="show the versions of qa-pipeline and its libraries")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", parents=[common],
                       help="run the train_qa flow: data → features → fine-tune → predict → metrics")
    config_arguments(t)
    t.add_argument("--store", default=None, help=STORE_HELP)
    t.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    t.set_defaults(func=runs.train)

    e = sub.add_parser("evaluate", parents=[common], help="run the evaluate_qa flow on a trained model")
    config_arguments(e)
    e.add_argument("--model", default=None, help="model folder, run folder, publish target (its champion: a folder or "
                   "s3://bucket/prefix/champion) or s3:// store model (default: config.model)")
    e.add_argument("--store", default=None, help=STORE_HELP)
    e.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    e.set_defaults(func=runs.evaluate)

    pr = sub.add_parser("predict", parents=[common],
                        help="run the answer_qa flow: answer every question of a file as evaluate would, "
                             "its stages kept in the store",
                        description="Answer every question of --questions (default: the config's eval_data) with "
                                    "the config's windows and post-processing, as evaluate answers them, and save "
                                    "the answers (id -> text, the predictions format score reads) whole.")
    config_arguments(pr)
    pr.add_argument("--questions", metavar="PATH", default=None,
                    help="a data file the pipeline reads or s3:// URI, answers not needed (default: eval_data)")
    pr.add_argument("--column", action="append", default=[], metavar="OURS=THEIRS",
                    help="with --questions: the file's name for one of our columns, e.g. --column question=query")
    source_options(pr, "with --questions: ")
    pr.add_argument("--model", default=None, help="model folder, run folder, publish target (its champion) or s3:// "
                    "store model (default: the champion of publish_target if set, else config.model)")
    pr.add_argument("--output", "-o", metavar="PATH", default=None,
                    help="a file or s3://bucket/key (default: <output_dir>/answers/predictions.json)")
    pr.add_argument("--store", default=None, help=STORE_HELP)
    pr.add_argument("--dry-run", action="store_true",
                    help="run every check answering makes first (config, model, questions, output, store), list "
                         "each stage as stored (reused) or to compute, and stop")
    pr.set_defaults(func=runs.predict)

    r = sub.add_parser("retrain", parents=[common],
                       help="run the retrain flow once: train, gate against the champion, promote, push")
    config_arguments(r)
    r.add_argument("--store", default=None, help=STORE_HELP)
    r.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    r.set_defaults(func=runs.retrain)

    s = sub.add_parser("score", parents=[common], help="official SQuAD v1.1/v2.0 scores of a predictions file")
    s.add_argument("data_file", help="official SQuAD JSON (as the official scripts), or any data file the pipeline "
                   "reads: JSONL, CSV, Parquet, flat JSON records, a dataset folder, a Hub dataset (v2.0 when a question has "
                   "no answer); a file may be an s3:// object")
    s.add_argument("pred_file", help="JSON of question id -> answer text, or a list of {id, prediction_text} records "
                   "(a file or an s3:// object)")
    s.add_argument("--column", action="append", default=[], metavar="OURS=THEIRS",
                   help="for a flat data file: its name for one of our columns (id, context, question, answers, "
                        "answer_text, answer_start), e.g. --column id=qid; repeat for several")
    source_options(s, "")
    # The official scripts' option names (-n, -t, -o) so that it drops into their place.
    s.add_argument("--na-prob-file", "-n", default=None, help="v2: JSON of question id -> null odds")
    s.add_argument("--na-prob-thresh", "-t", type=float, default=1.0,
                   help="v2: predict no answer when the null odds exceed this (default 1.0)")
    s.add_argument("--out-file", "-o", default=None, help="write the JSON here instead of printing it")
    s.add_argument("--version", choices=["1.1", "2.0"], default=None, help="default: from the data file")
    s.set_defaults(func=score.run)

    from typing import get_args

    from qa_lib.answer_inputs import BATCH, PRECISION, STRIDE, WINDOW  # as evaluation windows and batches
    from qa_lib.config import MAX_ANSWER_LEN, Precision

    a = sub.add_parser("answer", parents=[common], help="answer a question about a context with a trained model",
                       description="Answer --question about --context (or --context-file), or every question of a "
                                   "data file with --questions.")
    a.add_argument("--model", required=True, help="a trained model: its folder, a run folder, a publish target "
                   "(its champion: a folder or s3://bucket/prefix/champion) or an s3:// store model")
    a.add_argument("--question")
    context = a.add_mutually_exclusive_group()
    context.add_argument("--context", help="the context text")
    context.add_argument("--context-file", metavar="PATH", help="read the context from a UTF-8 file (- for stdin)")
    a.add_argument("--questions", metavar="PATH",
                   help="answer every question of a data file the pipeline reads (SQuAD JSON, JSONL, CSV, Parquet; "
                        "answers not needed): a JSON object by id (by row number from 0 if the file has none), "
                        "the answer's text (with --top-k > 1, the answers with scores and spans)")
    a.add_argument("--column", action="append", default=[], metavar="OURS=THEIRS",
                   help="with --questions: the file's name for one of our columns (id, context, question, title), "
                        "e.g. --column question=query; repeat for several")
    source_options(a, "with --questions: ")
    a.add_argument("--output", "-o", metavar="PATH",
                   help="with --questions: write the JSON here, a file or s3://bucket/key (default: stdout)")
    a.add_argument("--top-k", type=int, default=1, help="how many answers, best first (default 1)")
    a.add_argument("--max-answer-len", type=int, default=MAX_ANSWER_LEN,
                   help=f"longest answer, in tokens (default {MAX_ANSWER_LEN}, as transformers' pipeline)")
    a.add_argument("--max-length", type=int, default=WINDOW,
                   help=f"tokens per window, question included (default {WINDOW}, the evaluation window)")
    a.add_argument("--doc-stride", type=int, default=STRIDE,
                   help=f"tokens shared by consecutive windows of a long context (default {STRIDE})")
    a.add_argument("--handle-impossible-answer", action="store_true",
                   help="allow the empty answer (SQuAD v2 models) when it scores best")
    a.add_argument("--precision", choices=get_args(Precision), default=PRECISION,
                   help=f"as the config's precision (default {PRECISION}: bf16 or fp16 on a GPU, fp32 on "
                        "the CPU, as evaluation runs)")
    a.add_argument("--dry-run", action="store_true",
                   help="with --questions: check the options, the output's place, the file and the model, then stop")
    a.add_argument("--batch-size", type=int, default=BATCH,
                   help=f"windows per forward pass (default {BATCH}, the evaluation batch)")
    a.set_defaults(func=answer.run)

    d = sub.add_parser("deploy", parents=[common], help="register the Prefect deployments with the configured server")
    d.add_argument("--work-pool", default=None, help="the work pool the deployments run on (default: $QA_WORK_POOL "
                   "or gpu)")
    d.add_argument("--config", default=None, metavar="PATH",
                   help="the config whose values become the deployments' parameters (default: $QA_DEPLOY_CONFIG "
                        "or configs/default.yaml, under this checkout)")
    d.add_argument("--source", default=None,
                   help="git URL[@ref] the workers clone the code from (default: this checkout's path; "
                        "$QA_DEPLOY_SOURCE)")
    d.add_argument("--store", default=None,
                   help="store every run of these deployments uses, e.g. s3://bucket/prefix (default: $QA_PIPELINE_STORE)")
    d.set_defaults(func=runs.deploy)

    st = sub.add_parser("store", parents=[common], help="list or clean the store")
    st_sub = st.add_subparsers(dest="store_command", required=True)
    ls = st_sub.add_parser("ls", parents=[common], help="stages, keys, sizes and ages")
    ls.add_argument("--store", default=None, help=STORE_HELP)
    ls.set_defaults(func=store.ls)
    gc = st_sub.add_parser("gc", parents=[common],
                           help="remove entries older than DAYS, keeping champions' models and running trainings")
    gc.add_argument("--older-than", type=float, required=True, metavar="DAYS",
                    help="age in days, fractions allowed (0.5: twelve hours)")
    gc.add_argument("--dry-run", action="store_true", help="list what would go, remove nothing")
    gc.add_argument("--store", default=None, help=STORE_HELP)
    gc.set_defaults(func=store.gc)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options and `key=value` overrides in any order, as users type them."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    verbose = getattr(args, "verbose", False)
    previous_handler = previous_term_handler = None
    if args.command in ("train", "evaluate", "predict", "retrain", "deploy"):  # the commands that import Prefect
        runs.prefect_defaults()
    if args.command in ("train", "evaluate", "predict", "retrain"):
        previous_handler = bounded_interrupts()
        previous_term_handler = exit_on_terminate()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        announce_interrupted()
        return 130
    except QAPipelineError as exc:
        # One line; the full message (every problem found) and the traceback under --verbose.
        message = str(exc) if verbose else str(exc).splitlines()[0]
        if verbose:
            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - not the user's input: one line, the details on request
        if isinstance(exc, BrokenPipeError) and _stdout_gone():
            return 128 + signal.SIGPIPE  # as a command the shell's `| head` stopped; what was read is the output
        if verbose:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"error: {type(exc).__name__}: {first} (rerun with --verbose for the traceback; the Prefect "
              "log has it too)", file=sys.stderr)
        return 1
    finally:
        if previous_handler is not None:  # main() is also called from code (and tests): leave it as found
            signal.signal(signal.SIGINT, previous_handler)
        if previous_term_handler is not None:
            signal.signal(signal.SIGTERM, previous_term_handler)


def _stdout_gone() -> bool:
    """Whether stdout's reader has closed the pipe (`store ls | head`), as opposed to a socket's
    broken pipe in the middle of a run: the kernel flags a pipe without readers as an error to poll.
    If so, stdout is pointed at /dev/null, so that Python's own flush at exit does not report the
    same broken pipe once more."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        gone = any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no real stdout (captured, closed)
        return False
    if gone:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return gone
