"""The library's warnings, and its downloads and uploads, in the run's Prefect log.

`qa_lib` logs with the standard `logging` module, and Prefect sends to its API only the records of
its own run loggers: a warning the library raised during a run (data flagged one way and read
another, a model's head left untrained, a Hub model served from the cache, a lease taken over from
a stalled worker) reached the worker's stderr, which a deployment's run page never shows; nor did
anything say that a task's last minutes went to uploading its model to a shared store.
"""

from __future__ import annotations

import logging

from prefect.exceptions import MissingContextError
from prefect.logging.handlers import APILogHandler

from qa_lib.progress import NOTICE_LOGGERS  # below WARNING, only these


class _InRunsOnly(APILogHandler):
    """Prefect's API handler, silent outside a flow or task run (the library is used without
    Prefect too: `answer`, `score`, a notebook)."""

    def emit(self, record: logging.LogRecord) -> None:
        from prefect.context import get_run_context

        if record.levelno < logging.WARNING and not record.name.startswith(NOTICE_LOGGERS):
            return
        try:
            get_run_context()
        except MissingContextError:
            return
        super().emit(record)


def send_library_logs() -> None:
    """Send `qa_lib`'s warnings and errors, its transfers and its model loading, to the current run's
    log as well as to the console (idempotent)."""
    from prefect.settings import PREFECT_LOGGING_EXTRA_LOGGERS

    library = logging.getLogger("qa_lib")
    # Named in PREFECT_LOGGING_EXTRA_LOGGERS, it has Prefect's own API handler already: a second
    # would show each record twice on the run page.
    extra = PREFECT_LOGGING_EXTRA_LOGGERS.value() or []
    if "qa_lib" not in extra and not any(isinstance(handler, _InRunsOnly) for handler in library.handlers):
        library.addHandler(_InRunsOnly())
    for name in NOTICE_LOGGERS:
        if (logger := logging.getLogger(name)).getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
