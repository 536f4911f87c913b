"""`qa-pipeline train | evaluate | retrain | score | answer | deploy`.

Errors the user can fix are printed as one message (exit code 2), not a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from qa_lib.errors import QAPipelineError


def _score(args) -> int:
    from qa_lib.metrics import is_v2_dataset, squad_v1, squad_v2

    from qa_lib.text_files import read_utf8

    def read(path: str):
        try:
            return json.loads(read_utf8(Path(path)))
        except FileNotFoundError:
            raise QAPipelineError(f"{path}: file not found") from None
        except OSError as exc:
            raise QAPipelineError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
        except json.JSONDecodeError as exc:
            raise QAPipelineError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: "
                                  f"{exc.msg}") from None

    doc, preds = read(args.data_file), read(args.pred_file)
    na_probs = read(args.na_prob_file) if args.na_prob_file else None
    _check_score_inputs(args, doc, preds, na_probs)
    v2 = args.version == "2.0" or (args.version is None and is_v2_dataset(doc))
    try:
        if v2:
            out = squad_v2(doc["data"], preds, na_probs, args.na_prob_thresh)
        else:
            if doc.get("version") != "1.1":
                print(f"Evaluation expects v-1.1, but got dataset with v-{doc.get('version')}", file=sys.stderr)
            out = squad_v1(doc["data"], preds)
    except ValueError as exc:
        where = args.na_prob_file if str(exc).startswith("null odds") else args.pred_file
        raise QAPipelineError(f"{where}: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise QAPipelineError(f"{args.data_file}: not an official SQuAD file ({type(exc).__name__}: {exc})") from None
    if args.out_file:
        from qa_lib.errors import ConfigError

        try:
            Path(args.out_file).expanduser().write_text(json.dumps(out))
        except OSError as exc:
            raise ConfigError(f"--out-file {args.out_file}: cannot write there: {exc.strerror or exc}") from None
    else:
        # The official scripts print v2.0 results indented and v1.1 results on one line.
        print(json.dumps(out, indent=2) if v2 else json.dumps(out))
    return 0


def _check_score_inputs(args, doc, preds, na_probs) -> None:
    if not (isinstance(doc, dict) and isinstance(doc.get("data"), list)):
        raise QAPipelineError(f"{args.data_file}: not an official SQuAD file (no top-level 'data' list)")
    if not isinstance(preds, dict) or not all(isinstance(v, str) for v in preds.values()):
        raise QAPipelineError(f"{args.pred_file}: predictions must be a JSON object of question id -> answer text")
    if na_probs is not None and (not isinstance(na_probs, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in na_probs.values())):
        raise QAPipelineError(f"{args.na_prob_file}: null odds must be a JSON object of question id -> number")


def _answer(args) -> int:
    from transformers.utils import logging as hf_logging

    from qa_lib.answer import answer

    context = args.context if args.context is not None else _read_context(args.context_file)
    # One model load for one answer: its "Loading weights" bar is only noise before the JSON.
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        result = answer(args.model, args.question, context, top_k=args.top_k,
                        max_answer_len=args.max_answer_len, handle_impossible_answer=args.handle_impossible_answer,
                        max_length=args.max_length, doc_stride=args.doc_stride)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    items = result if isinstance(result, list) else [result]
    print(json.dumps([a.to_dict() for a in items] if args.top_k > 1 else items[0].to_dict(), ensure_ascii=False))
    return 0


def _read_context(name: str) -> str:
    """A context from a file or stdin, checked as UTF-8 like every data file (no bytes echoed)."""
    from qa_lib.errors import DataError
    from qa_lib.text_files import read_utf8

    if name == "-":
        data = sys.stdin.buffer.read()
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError("stdin", [f"not UTF-8 (byte offset {exc.start})"]) from None
    path = Path(name).expanduser()
    if not path.is_file():
        raise DataError(name, ["file not found"])
    return read_utf8(path)


def _prefect_defaults() -> None:
    import warnings

    # Said once, as our own one line, when the temporary server needs that folder (flows.server).
    warnings.filterwarnings("ignore", message="Failed to create the Prefect home directory")
    # The ephemeral server boots a database on first use: slow on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _load_config(args):
    _prefect_defaults()
    from flows.server import check_api
    from qa_lib.config import PipelineConfig

    config = PipelineConfig.from_yaml(args.config, args.overrides)
    check_api()
    return config


def _dry_run(config, training: bool, store: str | None, model: str | None = None) -> int:
    """Every check a run makes before its first stage, then each stage: reused from the store or to compute."""
    from qa_lib.plan import LABELS
    from qa_lib.preflight import check_data, check_run, planned_stages
    from qa_lib.store import open_store

    location = open_store(store).location
    check_run(config, training, model, location)
    stages = planned_stages(config, training, model, location)
    checked = check_data(config, training, skip={slot for slot, _, _, stored in stages if stored})
    print(f"dry run: every check passed; nothing was run. Store: {location}")
    for slot, stage, key, stored in stages:
        entry = f"{stage}/{key}"
        note = f" ({checked[slot]:,} examples, valid)" if slot in checked else ""
        print(f"  {LABELS[slot]:<16} {entry:<38} {'stored, reused' if stored else 'to compute'}{note}")
    return 0


def _train(args) -> int:
    config = _load_config(args)
    if args.dry_run:
        return _dry_run(config, True, args.store)
    from flows.train_qa import run_train

    summary = run_train(config, store_root=args.store)
    _print_summary(summary)
    return 0


def _evaluate(args) -> int:
    config = _load_config(args)
    if args.dry_run:
        return _dry_run(config, False, args.store, args.model)
    from flows.evaluate_qa import run_evaluate

    summary = run_evaluate(config, model=args.model, store_root=args.store)
    _print_summary(summary)
    return 0


def _retrain(args) -> int:
    config = _load_config(args)
    if args.dry_run:  # the training run's stages; the champion is read and gated only by a real run
        from qa_lib.preflight import check_retrain

        check_retrain(config)
        return _dry_run(config, True, args.store)
    from flows.retrain import retrain

    result = retrain(config=config, store_root=args.store)
    _print_summary(result)
    if result["promoted"]:
        print(f"promoted: {result['location']}")
        if result.get("hub_commit"):
            print(f"hub: {result['hub_commit']}")
    else:
        print(f"not promoted: {config.promote_key} {result['challenger']:.2f} vs champion {result['champion']:.2f} "
              f"(margin {config.promote_margin})")
    return 0


def _deploy(args) -> int:
    from deployments.register import register

    for name in register(work_pool=args.work_pool, source=args.source, store=args.store):
        print(f"registered deployment {name}")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _age(created: float) -> str:
    hours = max(0.0, time.time() - created) / 3600
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def _existing_store(location: str | None, cache: bool = True):
    """The store to list or clean, or one line on why there is none: listing an empty result for
    a mistyped folder (or `.qa-store` looked for in the wrong directory) would say "nothing there"
    about the wrong place."""
    from qa_lib.errors import ConfigError
    from qa_lib.store import open_store

    store = open_store(location)
    if store.remote:  # no credentials, no bucket, no endpoint: one line, not botocore's traceback
        store.check(cache=cache)
    elif not store.root.is_dir():
        what = "is not a folder" if store.root.exists() else "does not exist (a run that uses it creates it)"
        raise ConfigError(f"store {store.location} {what}; give --store or set QA_PIPELINE_STORE")
    return store


def _store_ls(args) -> int:
    store = _existing_store(args.store, cache=False)  # listing downloads nothing
    entries = store.entries()
    keep = store.pinned()
    print(f"{'stage':<12} {'key':<24} {'size':>10} {'age':>9}  (store {store.location})")
    for e in entries:
        note = "  champion" if (e.stage, e.key) in keep else ""
        print(f"{e.stage:<12} {e.key:<24} {_size(e.size):>10} {_age(e.created):>9}{note}")
    print(f"{len(entries)} entries, {_size(sum(e.size for e in entries))}")
    return 0


def _store_gc(args) -> int:
    from qa_lib.errors import ConfigError
    from qa_lib.store import collect_garbage, sweep_local_copies

    if args.older_than < 0:
        raise ConfigError(f"--older-than: must be 0 or more days, got {args.older_than}")
    store = _existing_store(args.store)
    removed = collect_garbage(store, args.older_than, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for e in removed:
        print(f"{verb} {e.stage}/{e.key} ({_size(e.size)}, {_age(e.created)} old)")
    print(f"{verb} {len(removed)} entries, {_size(sum(e.size for e in removed))}")
    if store.remote:  # and this machine's downloaded copies, which only this machine can sweep
        swept = sweep_local_copies(store, args.older_than, dry_run=args.dry_run)
        for e in swept:
            print(f"{verb} the local copy of {e.stage}/{e.key} ({_size(e.size)}, unused for {_age(e.created)})")
        print(f"{verb} {len(swept)} local copies in {store.cache}, {_size(sum(e.size for e in swept))}")
    return 0


def _print_summary(summary: dict) -> None:
    metrics = summary.get("metrics", {})
    line = "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
    print(f"metrics: {line or 'none (no eval_data)'}")
    for key in ("model_dir", "predictions_dir", "flow_run"):
        if summary.get(key):
            print(f"{key}: {summary[key]}")


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
    t.add_argument("config", help="YAML config file")
    t.add_argument("overrides", nargs="*", default=[], help="key=value overrides, e.g. learning_rate=1e-4 eval_data.limit=100")
    t.add_argument("--store", default=None, help="content-addressed store root (default: $QA_PIPELINE_STORE or .qa-store)")
    t.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", parents=[common], help="run the evaluate_qa flow on a trained model")
    e.add_argument("config")
    e.add_argument("overrides", nargs="*", default=[])
    e.add_argument("--model", default=None, help="model folder or s3:// champion (default: config.model)")
    e.add_argument("--store", default=None)
    e.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    e.set_defaults(func=_evaluate)

    r = sub.add_parser("retrain", parents=[common],
                       help="run the retrain flow once: train, gate against the champion, promote, push")
    r.add_argument("config")
    r.add_argument("overrides", nargs="*", default=[])
    r.add_argument("--store", default=None)
    r.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    r.set_defaults(func=_retrain)

    s = sub.add_parser("score", parents=[common], help="official SQuAD v1.1/v2.0 scores of a predictions file")
    s.add_argument("data_file")
    s.add_argument("pred_file")
    # The official scripts' option names (-n, -t, -o) so that it drops into their place.
    s.add_argument("--na-prob-file", "-n", default=None, help="v2: JSON of question id -> null odds")
    s.add_argument("--na-prob-thresh", "-t", type=float, default=1.0,
                   help="v2: predict no answer when the null odds exceed this (default 1.0)")
    s.add_argument("--out-file", "-o", default=None, help="write the JSON here instead of printing it")
    s.add_argument("--version", choices=["1.1", "2.0"], default=None, help="default: from the data file")
    s.set_defaults(func=_score)

    from qa_lib.config import MAX_ANSWER_LEN, PipelineConfig

    # `answer` windows a context as evaluation does.
    answer_window = PipelineConfig.model_fields["eval_max_length"].default
    answer_stride = PipelineConfig.model_fields["eval_doc_stride"].default
    a = sub.add_parser("answer", parents=[common], help="answer a question about a context with a trained model")
    a.add_argument("--model", required=True, help="a trained model folder (or a store reference)")
    a.add_argument("--question", required=True)
    context = a.add_mutually_exclusive_group(required=True)
    context.add_argument("--context", help="the context text")
    context.add_argument("--context-file", metavar="PATH", help="read the context from a UTF-8 file (- for stdin)")
    a.add_argument("--top-k", type=int, default=1, help="how many answers, best first (default 1)")
    a.add_argument("--max-answer-len", type=int, default=MAX_ANSWER_LEN,
                   help=f"longest answer, in tokens (default {MAX_ANSWER_LEN}, as transformers' pipeline)")
    a.add_argument("--max-length", type=int, default=answer_window,
                   help=f"tokens per window, question included (default {answer_window}, the evaluation window)")
    a.add_argument("--doc-stride", type=int, default=answer_stride,
                   help=f"tokens shared by consecutive windows of a long context (default {answer_stride})")
    a.add_argument("--handle-impossible-answer", action="store_true",
                   help="allow the empty answer (SQuAD v2 models) when it scores best")
    a.set_defaults(func=_answer)

    d = sub.add_parser("deploy", parents=[common], help="register the Prefect deployments with the configured server")
    d.add_argument("--work-pool", default="gpu")
    d.add_argument("--source", default=None,
                   help="git URL[@ref] the workers clone the code from (default: this checkout's path; "
                        "$QA_DEPLOY_SOURCE)")
    d.add_argument("--store", default=None,
                   help="store every run of these deployments uses, e.g. s3://bucket/prefix (default: $QA_PIPELINE_STORE)")
    d.set_defaults(func=_deploy)

    st = sub.add_parser("store", parents=[common], help="list or clean the store")
    st_sub = st.add_subparsers(dest="store_command", required=True)
    ls = st_sub.add_parser("ls", parents=[common], help="stages, keys, sizes and ages")
    ls.add_argument("--store", default=None, help="folder or s3://bucket/prefix (default: $QA_PIPELINE_STORE or .qa-store)")
    ls.set_defaults(func=_store_ls)
    gc = st_sub.add_parser("gc", parents=[common],
                           help="remove entries older than DAYS, keeping champions' models and running trainings")
    gc.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    gc.add_argument("--dry-run", action="store_true", help="list what would go, remove nothing")
    gc.add_argument("--store", default=None)
    gc.set_defaults(func=_store_gc)
    return p


INTERRUPTED = ("interrupted: finished stages stay in the store and a rerun reuses them (training resumes from its "
               "newest checkpoint)")
# Ctrl-C reaches the terminal's whole process group, so Prefect's temporary server (a child of this
# process) stops too, and Prefect then spends minutes retrying to report the crash to it (145 s
# measured) before failing with "Connection refused". Our own code unwinds at once (locks and
# leases released on the way out); this bounds the rest: long enough for a real server to record
# the crash, short where the server was our own child and is gone.
INTERRUPT_GRACE_S = {"server": 10.0, "temporary server": 2.0}


_interrupt_announced = threading.Event()


def _announce_interrupted() -> None:
    """Say it once, whether `main` or the timer gets there first."""
    if not _interrupt_announced.is_set():
        _interrupt_announced.set()
        # On a line of its own: Prefect's failed log shipping may have left one unfinished.
        print(f"\n{INTERRUPTED}", file=sys.stderr, flush=True)


def _leave_interrupted() -> None:
    _announce_interrupted()
    os._exit(130)


def _bounded_interrupts():
    """Ctrl-C raises KeyboardInterrupt as usual, and the process exits `INTERRUPT_GRACE_S` later
    if it is still waiting on the (temporary) server; a second Ctrl-C exits at once. Returns the
    handler it replaced (None off the main thread, where no handler can be set)."""
    def on_interrupt(signum, frame):
        if on_interrupt.fired:
            _leave_interrupted()
        on_interrupt.fired = True
        from prefect.settings import get_current_settings

        real_server = bool(get_current_settings().api.url)
        if not real_server:
            # Ctrl-C stopped the temporary server too: Prefect's log shipping to it can only fail
            # now, and printed "--- Error logging to API --- All connection attempts failed".
            logging.raiseExceptions = False
        grace = INTERRUPT_GRACE_S["server" if real_server else "temporary server"]
        timer = threading.Timer(grace, _leave_interrupted)
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt

    on_interrupt.fired = False
    _interrupt_announced.clear()
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, on_interrupt)


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
    previous_handler = None
    if args.command in ("train", "evaluate", "retrain"):
        _prefect_defaults()
        previous_handler = _bounded_interrupts()
        if not verbose:
            from flows.console import quiet_expected_tracebacks

            quiet_expected_tracebacks()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _announce_interrupted()
        return 130
    except QAPipelineError as exc:
        # One line; the full message (every problem found) and the traceback under --verbose.
        message = str(exc) if verbose else str(exc).splitlines()[0]
        if verbose:
            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - not the user's input: one line, the details on request
        if verbose:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"error: {type(exc).__name__}: {first} (rerun with --verbose for the traceback; the Prefect "
              "log has it too)", file=sys.stderr)
        return 1
    finally:
        if previous_handler is not None:  # main() is also called from code (and tests): leave it as found
            signal.signal(signal.SIGINT, previous_handler)


if __name__ == "__main__":
    sys.exit(main())
