"""Copies each training checkpoint to a shared store as it is saved, so any worker can resume."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainerCallback

_log = logging.getLogger(__name__)


class CheckpointToStore(TrainerCallback):
    """After each save, once every process has written its part, the main one uploads
    `checkpoint-<step>` under the model's key."""

    def __init__(self, store, stage: str, key: str, log=None):
        self.store, self.stage, self.key, self.log = store, stage, key, log or _log

    def on_save(self, args, state, control, **kwargs):
        if not self.store.remote:
            return
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            # Each rank writes its own part of a checkpoint (its RNG state): upload once all have.
            dist.barrier()
        if args.process_index != 0:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir():
            self.store.save_checkpoint(self.stage, self.key, checkpoint)
            self.log.info("checkpoint at step %d saved to %s", state.global_step, self.store.location)
