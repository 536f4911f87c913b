"""What a failed run prints in a terminal.

Prefect's console handler prints the whole traceback of every failed task and flow (60 to 80
lines) before the one line the user can act on. For the failures we raise on purpose (a
`QAPipelineError`: bad config, data or model) the traceback says nothing more than the
message, so the console shows the message alone; the traceback still goes to the Prefect log
(the API handler formats its own copy) and to the terminal under `--verbose`.
"""

from __future__ import annotations

import logging

from qa_lib.errors import QAPipelineError


def _expected(exc_info) -> bool:
    exc = exc_info[1] if exc_info else None
    while exc is not None:
        if isinstance(exc, QAPipelineError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def quiet_expected_tracebacks() -> None:
    """Console handlers print expected failures without their traceback (idempotent).

    Patched on the handler class, not on today's handler objects: Prefect reconfigures logging
    (new handlers) when a flow run or the ephemeral server starts.
    """
    from prefect.logging.handlers import PrefectConsoleHandler

    original = PrefectConsoleHandler.format
    if getattr(original, "_qa_quiet", False):
        return

    def format(self, record: logging.LogRecord) -> str:
        if not _expected(record.exc_info):
            return original(self, record)
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None  # the record is shared with the API handler: put it back
        try:
            return original(self, record)
        finally:
            record.exc_info, record.exc_text = saved

    format._qa_quiet = True  # type: ignore[attr-defined]
    PrefectConsoleHandler.format = format  # type: ignore[method-assign]


def lines_above_bars() -> None:
    """Console handlers write each line above a progress bar (the Trainer's), which is cleared for it
    and drawn again under it, from any thread: a checkpoint upload's notices come from its own, where
    `log_above_bars` cannot reach them, and were written onto the end of the bar (idempotent)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    original = PrefectConsoleHandler.emit
    if getattr(original, "_qa_above_bars", False):
        return

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        with tqdm.external_write_mode(file=self.stream):
            original(self, record)

    emit._qa_above_bars = True  # type: ignore[attr-defined]
    PrefectConsoleHandler.emit = emit  # type: ignore[method-assign]
