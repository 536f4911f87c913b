"""Ctrl-C during a run: our code unwinds at once, and the wait on Prefect's server is bounded."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

_WHAT_IS_KEPT = ("finished stages stay in the store and a rerun reuses them (training resumes from its newest "
                 "checkpoint)")
INTERRUPTED = f"interrupted: {_WHAT_IS_KEPT}"
TERMINATED = f"terminated (SIGTERM): {_WHAT_IS_KEPT}"
# Ctrl-C reaches the terminal's whole process group, so Prefect's temporary server (a child of this
# process) stops too, and Prefect then spends minutes retrying to report the crash to it (145 s
# measured) before failing with "Connection refused". Our own code unwinds at once (locks and
# leases released on the way out); this bounds the rest: long enough for a real server to record
# the crash, short where the server was our own child and is gone.
INTERRUPT_GRACE_S = {"server": 10.0, "temporary server": 2.0}


_interrupt_announced = threading.Event()


def announce_interrupted() -> None:
    """Say it once, whether `main` or the timer gets there first."""
    if not _interrupt_announced.is_set():
        _interrupt_announced.set()
        # On a line of its own: Prefect's failed log shipping may have left one unfinished.
        print(f"\n{INTERRUPTED}", file=sys.stderr, flush=True)


def _leave_interrupted() -> None:
    announce_interrupted()
    os._exit(130)


def bounded_interrupts():
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


def exit_on_terminate():
    """SIGTERM (a stopping pod, `kill`) ends the command with one line and exit 143 rather than
    silently: training first saves a checkpoint (`qa_lib.termination`), Prefect records the run as
    Crashed and hands the signal back here, and the exit unwinds, so leases are released and the
    temporary server is stopped. Returns the handler it replaced (None off the main thread)."""
    def on_terminate(signum, frame):
        print(f"\n{TERMINATED}", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, on_terminate)
