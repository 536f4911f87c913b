"""Progress bars on a terminal, none on a worker: `QA_PIPELINE_NO_PROGRESS=1` (the deployments'
job variable) turns off datasets' and transformers' bars, the prediction bar and the Trainer's
printed loss dicts, whose carriage-return lines only clutter a worker's log. The loss still
reaches the Prefect log and the training-progress artifact."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# Loggers whose INFO records deserve a reader: a transfer that can take minutes (to or from an S3
# store or target, from the Hub), announced before it starts, and a model's new head.
NOTICE_LOGGERS = ("qa_lib.store", "qa_lib.publish", "qa_lib.modeling")


def log_above_bars(logger: logging.Logger | logging.LoggerAdapter, level: int, message: str, *args) -> None:
    """Log a line while a bar may be drawn (the Trainer's): the bar is cleared for it and redrawn
    under it, where the line was otherwise written onto the end of the bar's."""
    from tqdm import tqdm

    with tqdm.external_write_mode(file=sys.stderr):
        logger.log(level, message, *args)


def progress_enabled() -> bool:
    return os.environ.get("QA_PIPELINE_NO_PROGRESS") != "1"


def configure_progress() -> None:
    """Apply the setting to the libraries that draw bars of their own (idempotent)."""
    if progress_enabled():
        return
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


@contextmanager
def datasets_bars_off(off: bool = True) -> Iterator[None]:
    """datasets' progress bars (casting, map) off for a block, as they were after it: for work whose
    output is a result to read (a dry run's plan, scores, one answer), not a wait to watch."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    if off:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if off and was_enabled:
            datasets.enable_progress_bars()


@contextmanager
def notices_printed() -> Iterator[None]:
    """The `NOTICE_LOGGERS`' records printed on stderr, one plain line each, for a block: for the
    commands that run without Prefect (whose flows send them to the run's log instead)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    loggers = [logging.getLogger(name) for name in NOTICE_LOGGERS]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
        logger.propagate = False  # a handler of the root's (Prefect's console, once imported) would print it again
    try:
        yield
    finally:
        for logger, (level, propagate) in zip(loggers, saved):
            logger.removeHandler(handler)
            logger.setLevel(level)  # not `.level =`: setLevel also clears logging's cache of the old answer
            logger.propagate = propagate
