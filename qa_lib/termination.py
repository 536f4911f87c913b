"""A termination signal during training saves a checkpoint before the process stops.

A preempted GPU or an evicted pod gets SIGTERM and a grace period (Kubernetes: 30 s) before
SIGKILL, and a Prefect cancellation is a SIGTERM too. Stopping at once loses every step since the
last periodic checkpoint. Instead the signal is held while the current optimizer step finishes,
a checkpoint is saved (and uploaded by `checkpoint_sync.CheckpointToStore`, which runs first),
and then the signal goes on to the handler that was there before: Prefect's marks the run
Crashed or Cancelled as it would have, the default one ends the process. A second signal is
passed on at once.

Data-parallel ranks (`launch`, which `torchrun` hands the signal on to) must save at the same
step. Rank 0 names it in a `StopFile` (`STOP_FILE_ENV`) at the end of the step it saw the signal
in: the next one, which no rank can finish before rank 0 has written (its gradients wait for rank 0's).
Each rank reads the file at every step's end, a file check rather than a collective, so no step
waits on the GPU for it. The launching process writes there too: "save" when it was stopped (rank
0 then names the step as for its own signal: the ranks get SIGTERM only through `torchrun`, which a
second SIGTERM, the process group's and then the launcher's, made abandon them mid-save), "now"
for a Ctrl-C or a cancel, which stop at once. Under another launcher the signal is left to its handlers, as before.

A launching process killed outright (SIGKILL: a runner's escalation after its grace period, the
OOM killer) writes nothing, and `torchrun` and its ranks, in sessions of their own, would train on
with nobody to wait for them, holding the GPU and uploading checkpoints under a key whose lease
has lapsed. So rank 0 also checks at every step's end that the launching process
(`LAUNCHER_PID_ENV`) and its own parent, `torchrun`, are still there; when either is gone it names
the step to save at, as for a signal, and the ranks save and stop. A launching process whose
`torchrun` was killed waits for them (`launch.RANKS_LOCK`) before it fails.

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
from pathlib import Path

from transformers import TrainerCallback

from qa_lib.errors import QAPipelineError
from qa_lib.progress import log_above_bars

log = logging.getLogger(__name__)

# Set by `launch` for its ranks: the file where rank 0 names the step every rank saves at.
STOP_FILE_ENV = "QA_PIPELINE_STOP_FILE"
STOP_NOW = "now"
STOP_SAVE = "save"  # the launching process's word, for rank 0 to name the step
# Set by `launch` for its ranks: the process whose end, seen by rank 0, makes them save and stop.
LAUNCHER_PID_ENV = "QA_PIPELINE_LAUNCHER_PID"


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
        self.data_parallel = int(os.environ.get("WORLD_SIZE", "1")) > 1
        path = os.environ.get(STOP_FILE_ENV) if self.data_parallel else None
        self.stop_file = StopFile(path) if path else None
        self.owner = owner or self.stop_file or SignalOwner()
        launcher = os.environ.get(LAUNCHER_PID_ENV) if self.stop_file else None
        # (launching process, torchrun): rank 0 stops its ranks when either is gone.
        self.parents = (int(launcher), os.getppid()) if launcher else None
        self.why: str | None = None  # what made training save and stop, for the log
        self.stop_at: int | None = None  # data-parallel: the step every rank saves at
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
        if self.data_parallel and not self.stop_file:
            return False
        if threading.current_thread() is not threading.main_thread():
            return False  # no handler can be set off the main thread
        # A signal someone ignores on purpose stays ignored; one set outside Python cannot be handed back.
        current = signal.getsignal(self.signum)
        return current is not signal.SIG_IGN and current is not None

    def _on_signal(self, signum, frame) -> None:
        # Nothing logged here: the signal may have interrupted a write to the same log stream.
        stop_now = self.received or self.owner.stop_at_once()  # a second signal, or a cancel
        self.received = True
        if stop_now:
            self._pass_on()

    def on_step_end(self, args, state, control, **kwargs):
        if self._due(state) and not self.saving:
            self.saving = True
            if state.is_world_process_zero:
                why, again = (self.why, "") if self.why else (f"{self.name} received", " (send it again to stop at once)")
                log_above_bars(log, logging.WARNING, f"{why}: saving a checkpoint at step {state.global_step} of "
                               f"{state.max_steps}, then stopping{again}")
            control.should_save = True
            control.should_training_stop = True
        return control

    def _due(self, state) -> bool:
        if not self.stop_file:
            return self.received
        if self.stop_at is None:
            text = self.stop_file.read()
            if state.is_world_process_zero:
                asked = self.received or text == STOP_SAVE
                self.why = None if asked else self._orphaned()
                if asked or self.why:
                    text = str(state.global_step + 1)
                    self.stop_file.write(text)
            self.stop_at = int(text) if text and text.isdigit() else None
        return self.stop_at is not None and state.global_step >= self.stop_at

    def _orphaned(self) -> str | None:
        """Which of the processes above this rank is gone, if one is."""
        if self.parents is None:
            return None
        launcher, agent = self.parents
        if os.getppid() != agent:
            return "torchrun is gone"
        # torchrun's parent rather than the launcher's pid: a killed launcher stays a zombie, which
        # answers kill(pid, 0), until its own parent reaps it; its children are handed on at once.
        agents_parent = _parent_of(agent)
        gone = agents_parent != launcher if agents_parent is not None else not _alive(launcher)
        return "the launching process is gone" if gone else None

    def on_save(self, args, state, control, **kwargs):
        if not self.saving or self.passed_on:
            return
        if state.is_world_process_zero:
            log_above_bars(log, logging.WARNING, f"checkpoint-{state.global_step} saved in {args.output_dir}; "
                           f"stopping for {self.name} (a rerun resumes from it)")
        if self.received:
            self._pass_on()

    def _pass_on(self) -> None:
        if self.passed_on:
            return
        self.passed_on = True
        self._give_back()
        signal.raise_signal(self.signum)

    def raise_if_stopped(self, state) -> None:
        if self.received or self.saving:
            cause = f"because {self.why}" if self.why else f"by {self.name}"
            raise TrainingStopped(f"training stopped {cause} at step {state.global_step} of {state.max_steps}; "
                                  "a rerun resumes from its checkpoint")


class StopFile(SignalOwner):
    """The file through which data-parallel ranks agree on the step to save at, and the launching
    process asks them to save and stop (`STOP_SAVE`) or to stop at once (`STOP_NOW`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def stop_at_once(self) -> bool:
        try:
            return self.read() == STOP_NOW
        except OSError:  # read in a signal handler: nothing may be raised there
            return False

    def stop_now(self) -> None:
        self.write(STOP_NOW)

    def save_then_stop(self) -> None:
        self.write(STOP_SAVE)

    def write(self, text: str) -> None:
        """A reader sees the whole text or no file, never a part of it."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, self.path)

    def read(self) -> str | None:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: there all the same
        return True
    return True


def _parent_of(pid: int) -> int | None:
    """`pid`'s parent from Linux's /proc (None elsewhere, or when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (name)": state, then the parent
