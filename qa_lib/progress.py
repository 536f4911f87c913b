"""Progress bars on a terminal, none on a worker: `QA_PIPELINE_NO_PROGRESS=1` (the deployments'
job variable) turns off datasets' and transformers' bars, the prediction bar and the Trainer's
printed loss dicts, whose carriage-return lines only clutter a worker's log. The loss still
reaches the Prefect log and the training-progress artifact."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


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
