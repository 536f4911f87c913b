"""`qa-pipeline train | evaluate | predict | retrain | deploy`: the Prefect flows, started from a YAML config."""

from __future__ import annotations

import os
import sys

from flows.server import api_url


def prefect_defaults() -> None:
    import warnings

    # Said once, as our own one line, when the temporary server needs that folder (flows.server).
    warnings.filterwarnings("ignore", message="Failed to create the Prefect home directory")
    # The ephemeral server boots a database on first use: slow on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's client telemetry (3.9), whose only switch this is: on its first import in a terminal
    # it printed a four-line notice above a bad input's one line, and sent events to an outside host
    # (none is reachable from a training cluster). DO_NOT_TRACK=0 turns it back on.
    os.environ.setdefault("DO_NOT_TRACK", "1")


def _load_config(args):
    """The config, read and validated before Prefect is imported, whose import was most of the 3 s a
    mistyped key or value took to be answered; then the console set up for the flow, and the API checked."""
    prefect_defaults()
    from qa_lib.config import PipelineConfig

    config = PipelineConfig.from_yaml(args.config, args.overrides)
    from flows.console import lines_above_bars, quiet_expected_tracebacks
    from flows.server import check_api

    lines_above_bars()
    if not getattr(args, "verbose", False):
        quiet_expected_tracebacks()
    check_api()
    return config


def _dry_run(config, training: bool, store: str | None, model: str | None = None) -> int:
    """Every check a run makes before its first stage, then each stage: reused from the store or to compute."""
    from qa_lib.preflight import check_data, check_run, planned_stages
    from qa_lib.progress import datasets_bars_off
    from qa_lib.store import open_store

    location = open_store(store).location
    check_run(config, training, model, location)
    stages = planned_stages(config, training, model, location)
    # The plan is the output: the seconds-long casting bars of reading the data would only bury it.
    with datasets_bars_off():
        checked = check_data(config, training, skip={slot for slot, _, _, stored in stages if stored}, model=model)
    return _print_plan(location, stages, checked)


def _print_plan(location: str, stages, checked: dict[str, int]) -> int:
    from qa_lib.plan import LABELS

    print(f"dry run: every check passed; nothing was run. Store: {location}")
    for slot, stage, key, stored in stages:
        entry = f"{stage}/{key}"
        count = checked.get(slot)
        note = f" ({count:,} example{'' if count == 1 else 's'}, valid)" if count is not None else ""
        print(f"  {LABELS[slot]:<16} {entry:<38} {'stored, reused' if stored else 'to compute'}{note}")
    return 0


def _checked_before_prefect(config, training: bool, store: str | None, model: str | None = None,
                            retraining: bool = False) -> None:
    """Without a Prefect server, the run's first checks (its preflight's) and its data's before Prefect
    starts a temporary one, and before the flows' imports (seconds): a bad path, model, window, output
    folder, store, data file or (`retraining`) publish target is then one line, not after the server's
    start-up and a log of the failed task. The flow checks again (its caches make that instant, and the
    data checked here is kept in the store for it); with a server, the failure is left to the flow,
    which records it there."""
    if api_url() is not None:
        return
    from qa_lib.preflight import check_and_keep_data, check_run
    from qa_lib.store import open_store

    location = open_store(store).location
    if retraining:  # first, as in the flow
        _retrain_targets_checked(config)
    check_run(config, training, model, location)
    check_and_keep_data(config, training, model, location)


def _retrain_targets_checked(config) -> None:
    """retrain's own first checks: its settings, the publish target, and the Hub repo when the token is
    in the environment (one kept in a Prefect Secret block is read, and the repo checked, by the flow)."""
    from qa_lib.preflight import check_retrain
    from qa_lib.publish.hub import env_token

    token = env_token()
    if config.hub_repo_id and not token:
        config = config.model_copy(update={"hub_repo_id": None})
    check_retrain(config, token)


def train(args) -> int:
    config = _load_config(args)
    if args.dry_run:
        from qa_lib.preflight import unpublished_settings

        code = _dry_run(config, True, args.store)
        if note := unpublished_settings(config):  # the run logs it as a warning
            print(f"note: {note}", file=sys.stderr)
        return code
    _checked_before_prefect(config, True, args.store)
    from flows.train_qa import run_train

    summary = run_train(config, store_root=args.store)
    print_summary(summary)
    return 0


def evaluate(args) -> int:
    config = _load_config(args)
    if args.dry_run:
        return _dry_run(config, False, args.store, args.model)
    _checked_before_prefect(config, False, args.store, args.model)
    from flows.evaluate_qa import run_evaluate

    summary = run_evaluate(config, model=args.model, store_root=args.store)
    print_summary(summary)
    return 0


def predict(args) -> int:
    """The answer_qa flow: every question of a file answered as evaluation would (the config's windows
    and post-processing), its stages kept in the store, the answers saved whole."""
    config = _load_config(args)
    from qa_lib.answer_inputs import default_answer_model, default_answers_output, questions_config
    from qa_lib.errors import ConfigError
    from qa_lib.preflight import check_and_keep_questions, check_answer_run, check_questions, planned_answer_stages
    from qa_lib.progress import datasets_bars_off
    from qa_lib.store import open_store

    from cli.answer import data_source, source_options_given

    if args.questions is None and (option := source_options_given(args)):
        own = {"--column": "columns"}.get(option, option[2:])
        raise ConfigError(f"predict: {option} goes with --questions (the config's eval_data has its own {own})")
    questions = None if args.questions is None else data_source(args.questions, args, "predict")
    answering = questions_config(config, questions)
    model = args.model or default_answer_model(answering)
    location = open_store(args.store).location
    if args.dry_run or api_url() is None:  # as _checked_before_prefect, with answering's own checks
        check_answer_run(answering, model, args.output or default_answers_output(answering), location)
        if not args.dry_run:
            check_and_keep_questions(answering, model, location)
    if args.dry_run:
        stages = planned_answer_stages(answering, model, location)
        checked = {}
        if not stages[0][3]:  # the questions' entry: checked when it was stored
            with datasets_bars_off():
                checked[stages[0][0]] = check_questions(answering, model)
        return _print_plan(location, stages, checked)
    from flows.answer_qa import answer_qa

    result = answer_qa(config=config, questions=questions, model=args.model, output=args.output,
                       store_root=args.store)
    print(f"answers: {result['answers']} ({result['no_answer']} with no answer)")
    for key in ("output", "predictions_dir", "model_dir"):
        print(f"{key}: {result[key]}")
    return 0


def retrain(args) -> int:
    config = _load_config(args)
    if args.dry_run:  # the training run's stages; the champion is read and gated only by a real run
        from qa_lib.preflight import check_retrain
        from tasks.secrets import hub_token

        check_retrain(config, hub_token())
        return _dry_run(config, True, args.store)
    _checked_before_prefect(config, True, args.store, retraining=True)
    from flows.retrain import retrain

    result = retrain(config=config, store_root=args.store)
    print_summary(result)
    if result["promoted"]:
        print(f"promoted: {result['location']}")
        if result.get("hub_commit"):
            print(f"hub: {result['hub_commit']}")
    else:
        print(f"not promoted: {config.promote_key} {result['challenger']:.2f} vs champion {result['champion']:.2f} "
              f"(margin {config.promote_margin})")
    return 0


def deploy(args) -> int:
    from deployments.register import register

    # A path given here is the user's, from where they stand; QA_DEPLOY_CONFIG's is the checkout's.
    config = None if args.config is None else os.path.abspath(args.config)
    for name in register(work_pool=args.work_pool, config_path=config, source=args.source, store=args.store):
        print(f"registered deployment {name}")
    return 0


def print_summary(summary: dict) -> None:
    metrics = summary.get("metrics", {})
    line = "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
    print(f"metrics: {line or 'none (no eval_data)'}")
    for key in ("model_dir", "predictions_dir", "flow_run"):
        if summary.get(key):
            print(f"{key}: {summary[key]}")
