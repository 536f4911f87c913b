"""A termination signal during training saves a checkpoint before the process stops.

A preempted GPU or an evicted pod gets SIGTERM and a grace period (Kubernetes: 30 s) before
SIGKILL, and a Prefect cancellation is a SIGTERM too. Stopping at once loses every step since the
last periodic checkpoint. Instead the signal is held while the current optimizer step finishes,
a checkpoint is saved (and uploaded by `checkpoint_sync.CheckpointToStore`, which runs first),
and then the signal goes on to the handler that was there before: Prefect's marks the run
Crashed or Cancelled as it would have, the default one ends the process. A second signal is
passed on at once.

One process only: data-parallel ranks would have to agree on the step to save at (a collective
every step), so under `torchrun` the signal is left to its handlers as before.

Who else has a say in the signal is a `SignalOwner`: the plain one just swaps handlers; the
Prefect runner's (`tasks.sigterm`) also keeps the runner's control channel working and says which
signals are a cancel, to pass on at once without a checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager

from transformers import TrainerCallback

from qa_lib.errors import QAPipelineError
from qa_lib.progress import log_above_bars

log = logging.getLogger(__name__)


class TrainingStopped(QAPipelineError):
    """Training stopped on a signal whose previous handler let the process go on: what was trained
    is a checkpoint to resume from, never a finished model."""


class SignalOwner:
    """How training takes a signal over and gives it back, and which signals it must not hold."""

    def take(self, signum: int, handler) -> Callable[[], None] | None:
        """Install `handler`; return what puts things back as they were, or None to leave the signal be."""
        previous = signal.signal(signum, handler)
        return lambda: signal.signal(signum, previous)

    def stop_at_once(self) -> bool:
        """Whether the signal just received asks to stop now, with no checkpoint (a cancel)."""
        return False


class SaveOnSignal(TrainerCallback):
    """Add it after `CheckpointToStore`, train inside `held()`, then `raise_if_stopped()`."""

    def __init__(self, signum: int = signal.SIGTERM, owner: SignalOwner | None = None):
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.owner = owner or SignalOwner()
        self.received = False
        self.saving = False  # a checkpoint was asked for
        self.passed_on = False
        self._give_back = None

    @contextmanager
    def held(self):
        """Hold the signal for the block; one that came and was not passed on yet goes on at its end."""
        self._give_back = self.owner.take(self.signum, self._on_signal) if self._can_hold() else None
        if self._give_back is None:
            yield self
            return
        try:
            yield self
        finally:
            if self.received:
                self._pass_on()  # at most once: it may have gone on already
            else:
                self._give_back()

    def _can_hold(self) -> bool:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return False
        if threading.current_thread() is not threading.main_thread():
            return False  # no handler can be set off the main thread
        # A signal someone ignores on purpose stays ignored; one set outside Python cannot be handed back.
        current = signal.getsignal(self.signum)
        return current is not signal.SIG_IGN and current is not None

    def _on_signal(self, signum, frame) -> None:
        # Nothing logged here: the signal may have interrupted a write to the same log stream.
        if self.received or self.owner.stop_at_once():
            self.received = True
            self._pass_on()
        else:
            self.received = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.received and not self.saving:
            self.saving = True
            log_above_bars(log, logging.WARNING, f"{self.name} received: saving a checkpoint at step "
                           f"{state.global_step} of {state.max_steps}, then stopping (send it again to stop at once)")
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.received and not self.passed_on:
            log_above_bars(log, logging.WARNING, f"checkpoint-{state.global_step} saved in {args.output_dir}; "
                           f"stopping for {self.name} (a rerun resumes from it)")
            self._pass_on()

    def _pass_on(self) -> None:
        if self.passed_on:
            return
        self.passed_on = True
        self._give_back()
        signal.raise_signal(self.signum)

    def raise_if_stopped(self, state) -> None:
        if self.received:
            raise TrainingStopped(f"training stopped by {self.name} at step {state.global_step} of {state.max_steps}; "
                                  "a rerun resumes from its checkpoint")
