"""SIGTERM during training under a Prefect runner: a cancel stops at once, anything else saves first.

A run that a Prefect runner or supervisor started (a worker of any type, `serve`, `prefect
flow-run execute` in a Kubernetes or Docker job) learns why it is being stopped over a control
channel before its SIGTERM comes: a cancel (the UI's Cancel), or a reschedule or relinquish (what
`prefect flow-run execute` does with its own SIGTERM, a preempted pod's, when
`PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR` says so). The run acknowledges that intent only while
Prefect's own SIGTERM handler is installed; unacknowledged, a cancel ended the run Crashed instead
of Cancelled (measured on a process worker). So while training holds the signal, its handler
stands in for Prefect's on that channel too: a cancel goes on to Prefect at once, as if training
had not held it; a reschedule, a relinquish or a SIGTERM with no intent (sent from outside) saves
a checkpoint first, which the next attempt on any worker resumes from.

Prefect keeps that channel private (`prefect._internal.control_listener` and the bridge in
`prefect.utilities.engine`): where those names are missing (another Prefect version), training
under a runner leaves the signal to Prefect, as it did before, and resumes from its last periodic
checkpoint.
"""

from __future__ import annotations

import signal

from qa_lib.termination import SignalOwner

_BRIDGE = ("_prefect_sigterm_bridge_lock", "_prefect_sigterm_handler")


class SharedWithPrefect(SignalOwner):
    """Training's handler in the place of Prefect's, for the signal and for the control channel."""

    def __init__(self, engine, listener):
        self._engine, self._listener = engine, listener

    def take(self, signum, handler):
        engine = self._engine
        with engine._prefect_sigterm_bridge_lock:  # the lock the channel checks and acknowledges under
            prefect_handler = engine._prefect_sigterm_handler
            if signal.getsignal(signum) is not prefect_handler:
                return None  # someone else's handler: not ours to stand in for
            signal.signal(signum, handler)
            engine._prefect_sigterm_handler = handler

        def give_back():
            with engine._prefect_sigterm_bridge_lock:
                engine._prefect_sigterm_handler = prefect_handler
                signal.signal(signum, prefect_handler)
        return give_back

    def stop_at_once(self) -> bool:
        return self._listener.get_intent() == "cancel"


class LeftToPrefect(SignalOwner):
    """Under a runner whose channel this Prefect keeps elsewhere: the signal is Prefect's alone."""

    def take(self, signum, handler):
        return None

    def stop_at_once(self) -> bool:
        return True


def sigterm_owner() -> SignalOwner:
    """Who shares SIGTERM with training in this process, and so whether it saves a checkpoint first."""
    try:
        from prefect._internal import control_listener
        from prefect.utilities import engine
    except ImportError:
        control_listener = engine = None
    if getattr(control_listener, "_configured_port", None) is None:
        return SignalOwner()  # no runner (`qa-pipeline train`, a flow called from Python): the machine is going away
    if not all(hasattr(engine, name) for name in _BRIDGE) or not hasattr(control_listener, "get_intent"):
        return LeftToPrefect()
    return SharedWithPrefect(engine, control_listener)
