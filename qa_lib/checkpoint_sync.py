"""Copies each training checkpoint to a shared store as it is saved, so any worker can resume.

The upload runs beside training: weights and optimizer state are about three times the model, and
a GPU that waits for them idles for seconds to minutes at every save. A snapshot of hard links is
uploaded, so the Trainer may delete the checkpoint (`save_total_limit`) while it is on its way. At
most one upload is in flight; the next save, and the last one (end of training, or the SIGTERM
checkpoint of `termination.SaveOnSignal`, after which the process stops), wait for it, and an
upload that failed raises there. When training fails, the one in flight lands before the failure
goes on (`finishing_on_failure`); one cut off (Ctrl-C, a killed process) leaves no marker, so it
does not count, and a rerun resumes from the one before.
"""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

from transformers import TrainerCallback

from qa_lib.errors import first_line

_log = logging.getLogger(__name__)

SNAPSHOTS = ".uploading"  # beside the checkpoints; no `checkpoint-*` name, so the Trainer ignores it


class CheckpointToStore(TrainerCallback):
    """After each save, once every process has written its part, the main one uploads
    `checkpoint-<step>` under the model's key: in the background (`background=False`: while
    training waits, as a baseline to measure against)."""

    def __init__(self, store, stage: str, key: str, log=None, background: bool = True):
        self.store, self.stage, self.key, self.log = store, stage, key, log or _log
        self.background = background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def on_save(self, args, state, control, **kwargs):
        if not self.store.remote:
            return
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            # Each rank writes its own part of a checkpoint (its RNG state): upload once all have.
            dist.barrier()
        if args.process_index != 0:
            return
        self.wait()  # one at a time, so the store's newest complete checkpoint is the newest saved
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not checkpoint.is_dir():
            return
        if not self.background or control.should_training_stop:
            # The process stops or stores the model next: this one must be there before it does.
            self._upload(checkpoint, state.global_step)
            return
        snapshot = _hard_link_copy(checkpoint, Path(args.output_dir) / SNAPSHOTS / checkpoint.name)
        # In a copy of this context: log handlers find the run there (Prefect's do), and a new thread
        # starts with an empty one.
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._upload_in_background, snapshot,
                                                                  state.global_step),
                                        name=f"upload {checkpoint.name}", daemon=True)
        # A daemon: Ctrl-C stops the process without waiting for it. A checkpoint counts in the store
        # once its marker is written, last, so a rerun then resumes from the one before.
        self._thread.start()

    def on_train_end(self, args, state, control, **kwargs):
        self.wait()

    def wait(self) -> None:
        """Until the upload in flight is done; raises what it failed with."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    @contextmanager
    def finishing_on_failure(self):
        """Train inside it: when training fails (not Ctrl-C, which stops at once), the upload in
        flight lands before the failure goes on, so a rerun resumes from it, as it did when every
        upload was waited for. Its own failure is logged, not raised over training's."""
        try:
            yield
        except Exception:
            try:
                self.wait()
            except Exception as exc:  # noqa: BLE001
                self.log.warning("the upload of the last checkpoint failed too: %s", first_line(exc, 200))
            raise

    def _upload_in_background(self, snapshot: Path, step: int) -> None:
        try:
            self._upload(snapshot, step)
        except BaseException as exc:  # raised in training's thread by the next wait()
            self._error = exc
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)

    def _upload(self, checkpoint: Path, step: int) -> None:
        self.store.save_checkpoint(self.stage, self.key, checkpoint)
        self.log.info("checkpoint at step %d saved to %s", step, self.store.location)


def _hard_link_copy(source: Path, dest: Path) -> Path:
    """`dest` with the files of `source`, linked where the file system allows it (no bytes copied)."""
    shutil.rmtree(dest, ignore_errors=True)  # left by a run that died mid-upload
    dest.parent.mkdir(parents=True, exist_ok=True)

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, dest, copy_function=link)
    return dest
