"""Data-parallel training across processes: `torchrun -m qa_lib.launch CONFIG_JSON FEATURES OUT`.

`fine_tune_distributed` starts one process per visible GPU (or `QA_PIPELINE_NPROC`, which
also works on the CPU with the gloo backend) and returns rank 0's result. One GPU or none
trains in-process instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

from qa_lib.errors import ConfigError, ModelError, QAPipelineError
from qa_lib.termination import LAUNCHER_PID_ENV, STOP_FILE_ENV, StopFile

log = logging.getLogger(__name__)

# A rank's own error, for the launching process to raise with its message and kind (a diverged
# loss is a ModelError) instead of "exited with code 1".
ERROR_FILE = "train_error.json"
# Rank 0's log records (step, max_steps, the Trainer's logs), one JSON line each, which the launching
# process hands on while training runs: its run log and progress artifact are the worker's, not a rank's.
PROGRESS_FILE = "train_progress.jsonl"
# Set for the ranks this module starts: their WORLD_SIZE is ours, not an outer launcher's.
LAUNCHED = "QA_PIPELINE_LAUNCHED"
# "1" when the launching process hands rank 0's records on to an `on_log`.
HANDED_ON = "QA_PIPELINE_LOGS_HANDED_ON"
STOP_FILE = "train_stop"
# Each rank holds it shared while it lives, so that a launching process whose torchrun was killed
# can wait for the ranks, which then save a checkpoint and stop (`termination`), before a retry starts new ones.
RANKS_LOCK = "train_ranks.lock"
# How long that wait may take: a checkpoint's save and upload.
RANKS_GRACE_S = 600
_KINDS = {kind.__name__: kind for kind in (ConfigError, ModelError, QAPipelineError)}


def process_count() -> int:
    from qa_lib.env import env_number

    forced = env_number("QA_PIPELINE_NPROC", 0, 1, "a whole number of training processes, 1 or more")
    if forced:
        return forced
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def fine_tune_distributed(config, features_path: str, output_dir: str | Path, nproc: int,
                          checkpoints_to: tuple[str, str, str] | None = None,
                          on_log: Callable[[int, int, dict], None] | None = None,
                          stop_at_once: Callable[[], bool] = lambda: False) -> dict:
    """`checkpoints_to`: (store location, stage, key) that rank 0 uploads each checkpoint to.
    `on_log(step, max_steps, logs)`: called here, in this process, for each of rank 0's log records,
    within about a second of the Trainer logging it.

    Stopped here (a SIGTERM's handler raised, say), the ranks save a checkpoint at the next step
    before they stop (`termination`); a Ctrl-C, or a stop that `stop_at_once()` calls a cancel, stops
    them at once."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config_file = output_dir / "launch_config.json"
    config_file.write_text(config.model_dump_json())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "qa_lib.launch", str(config_file), features_path, str(output_dir)]
    env = {**os.environ, LAUNCHED: "1", HANDED_ON: "1" if on_log else "0", LAUNCHER_PID_ENV: str(os.getpid())}
    if checkpoints_to:
        env["QA_PIPELINE_CHECKPOINTS_TO"] = json.dumps(checkpoints_to)
    (output_dir / ERROR_FILE).unlink(missing_ok=True)
    stop_file = StopFile(output_dir / STOP_FILE)
    stop_file.path.unlink(missing_ok=True)
    env[STOP_FILE_ENV] = str(stop_file.path)
    progress = output_dir / PROGRESS_FILE
    progress.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], env=env)
    try:
        read = 0
        while proc.poll() is None:
            read = _hand_on(progress, read, on_log)
            time.sleep(1.0)
        _hand_on(progress, read, on_log)
        if proc.returncode < 0:
            killed = signal.Signals(-proc.returncode).name
            _wait_for_ranks(output_dir / RANKS_LOCK, killed)
            # Not the ranks' own error (they stopped for want of torchrun): a retry resumes from their checkpoint.
            raise RuntimeError(f"distributed training stopped: torchrun ended by {killed}")
    except BaseException as exc:
        if proc.poll() is None:
            if isinstance(exc, KeyboardInterrupt) or stop_at_once():
                stop_file.stop_now()
            else:
                log.warning("training stopped (%s): the %d processes save a checkpoint at their next step first",
                            type(exc).__name__, nproc)
                stop_file.save_then_stop()
                proc.wait()  # not a SIGTERM as well: one on top of the process group's made torchrun drop the ranks
        raise
    finally:
        if proc.poll() is None:  # interrupted here: the ranks go with this process (torchrun hands them SIGTERM)
            proc.terminate()
            proc.wait()
    if proc.returncode != 0:
        if (output_dir / ERROR_FILE).exists():
            failure = json.loads((output_dir / ERROR_FILE).read_text())
            raise _KINDS[failure["kind"]](failure["message"])
        raise RuntimeError(f"distributed training exited with code {proc.returncode}")
    result_file = output_dir / "train_result.json"
    if not result_file.exists():
        raise QAPipelineError(f"distributed training wrote no result at {result_file}")
    return json.loads(result_file.read_text())


def _wait_for_ranks(lock: Path, signal_name: str) -> None:
    import fcntl

    log.warning("torchrun ended by %s: waiting for its ranks to save a checkpoint and stop", signal_name)
    with lock.open("a") as f:
        deadline = time.monotonic() + RANKS_GRACE_S
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"torchrun ended by {signal_name} and its ranks still run after "
                                       f"{RANKS_GRACE_S} s (they hold {lock})") from None
                time.sleep(0.5)


def _hold_while_alive(lock: Path) -> None:
    """Hold `lock` shared until this process ends (the system lets go of it then, however it ends)."""
    import fcntl

    global _held
    _held = lock.open("a")
    fcntl.flock(_held, fcntl.LOCK_SH)


_held = None


def _hand_on(progress: Path, read: int, on_log) -> int:
    """Call `on_log` for each whole line of `progress` after byte `read`; the new position."""
    if on_log is None or not progress.exists():
        return read
    with progress.open("rb") as f:
        f.seek(read)
        data = f.read()
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next look
    for line in data[:end].splitlines():
        record = json.loads(line)
        on_log(record["step"], record["max_steps"], record["logs"])
    return read + end


def _progress_file(path: Path):
    """A callback that appends this rank's log records to `path` (see PROGRESS_FILE): for rank 0 only.
    When the launching process hands them on to its `on_log`, that reports the loss, not the bar."""
    from transformers import TrainerCallback

    from qa_lib.train import LossReporter

    class ProgressFile(LossReporter if os.environ.get(HANDED_ON) == "1" else TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                with path.open("a") as f:
                    record = {"step": state.global_step, "max_steps": state.max_steps, "logs": logs}
                    f.write(json.dumps(record, default=str) + "\n")  # a value JSON lacks must not stop training

    return ProgressFile()


def main(argv: list[str]) -> None:
    import dataclasses

    import datasets

    from qa_lib.config import PipelineConfig
    from qa_lib.train import fine_tune

    _hold_while_alive(Path(argv[2], RANKS_LOCK))
    config = PipelineConfig.model_validate_json(Path(argv[0]).read_text())
    rank0 = int(os.environ.get("RANK", "0")) == 0
    callbacks = [_progress_file(Path(argv[2], PROGRESS_FILE))] if rank0 else []
    finishing = nullcontext()
    if target := os.environ.get("QA_PIPELINE_CHECKPOINTS_TO"):
        from qa_lib.checkpoint_sync import CheckpointToStore
        from qa_lib.store import open_store

        location, stage, key = json.loads(target)
        upload = CheckpointToStore(open_store(location), stage, key)
        callbacks.append(upload)
        finishing = upload.finishing_on_failure()
    try:
        with finishing:
            result = fine_tune(config, datasets.load_from_disk(argv[1]), argv[2], callbacks=callbacks)
    except QAPipelineError as exc:
        # The first rank to fail says why (one alone can run out of memory); the others, whose
        # collective it left, fail after it with torch's errors.
        kind = next(c.__name__ for c in type(exc).__mro__ if c.__name__ in _KINDS)
        with contextlib.suppress(FileExistsError), Path(argv[2], ERROR_FILE).open("x") as f:
            f.write(json.dumps({"kind": kind, "message": str(exc)}))
        raise
    if rank0:
        Path(argv[2], "train_result.json").write_text(json.dumps(dataclasses.asdict(result)))
    # Destroyed here, as torch asks, not left to the interpreter's exit, which tears gloo's threads
    # down from under it: a rank once aborted in CI ("terminate called without an active exception",
    # SIGABRT; not reproduced since) and torchrun failed the run.
    import torch.distributed

    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
