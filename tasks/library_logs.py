"""The library's warnings in the run's Prefect log.

`qa_lib` logs with the standard `logging` module, and Prefect sends to its API only the records of
its own run loggers: a warning the library raised during a run (data flagged one way and read
another, a model's head left untrained, a Hub model served from the cache, a lease taken over from
a stalled worker) reached the worker's stderr, which a deployment's run page never shows.
"""

from __future__ import annotations

import logging

from prefect.exceptions import MissingContextError
from prefect.logging.handlers import APILogHandler


class _InRunsOnly(APILogHandler):
    """Prefect's API handler, silent outside a flow or task run (the library is used without
    Prefect too: `answer`, `score`, a notebook)."""

    def emit(self, record: logging.LogRecord) -> None:
        from prefect.context import get_run_context

        try:
            get_run_context()
        except MissingContextError:
            return
        super().emit(record)


def send_library_warnings() -> None:
    """Send `qa_lib`'s warnings and errors to the current run's log as well (idempotent). Its INFO
    records stay out: what a run should say at that level its tasks say themselves."""
    library = logging.getLogger("qa_lib")
    if not any(isinstance(handler, _InRunsOnly) for handler in library.handlers):
        library.addHandler(_InRunsOnly(level=logging.WARNING))
