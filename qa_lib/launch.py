"""Data-parallel training across processes: `torchrun -m qa_lib.launch CONFIG_JSON FEATURES OUT`.

`fine_tune_distributed` starts one process per visible GPU (or `QA_PIPELINE_NPROC`, which
also works on the CPU with the gloo backend) and returns rank 0's result. One GPU or none
trains in-process instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from qa_lib.errors import ConfigError, ModelError, QAPipelineError

# A rank's own error, for the launching process to raise with its message and kind (a diverged
# loss is a ModelError) instead of "exited with code 1".
ERROR_FILE = "train_error.json"
_KINDS = {kind.__name__: kind for kind in (ConfigError, ModelError, QAPipelineError)}


def process_count() -> int:
    from qa_lib.env import env_number

    forced = env_number("QA_PIPELINE_NPROC", 0, 1, "a whole number of training processes, 1 or more")
    if forced:
        return forced
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def fine_tune_distributed(config, features_path: str, output_dir: str | Path, nproc: int,
                          checkpoints_to: tuple[str, str, str] | None = None) -> dict:
    """`checkpoints_to`: (store location, stage, key) that rank 0 uploads each checkpoint to."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config_file = output_dir / "launch_config.json"
    config_file.write_text(config.model_dump_json())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "qa_lib.launch", str(config_file), features_path, str(output_dir)]
    env = {**os.environ, "QA_PIPELINE_CHECKPOINTS_TO": json.dumps(checkpoints_to)} if checkpoints_to else None
    (output_dir / ERROR_FILE).unlink(missing_ok=True)
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], env=env)
    if proc.returncode != 0:
        if (output_dir / ERROR_FILE).exists():
            failure = json.loads((output_dir / ERROR_FILE).read_text())
            raise _KINDS[failure["kind"]](failure["message"])
        raise RuntimeError(f"distributed training exited with code {proc.returncode}")
    result_file = output_dir / "train_result.json"
    if not result_file.exists():
        raise QAPipelineError(f"distributed training wrote no result at {result_file}")
    return json.loads(result_file.read_text())


def main(argv: list[str]) -> None:
    import dataclasses

    import datasets

    from qa_lib.config import PipelineConfig
    from qa_lib.train import fine_tune

    config = PipelineConfig.model_validate_json(Path(argv[0]).read_text())
    callbacks = []
    if target := os.environ.get("QA_PIPELINE_CHECKPOINTS_TO"):
        from qa_lib.checkpoint_sync import CheckpointToStore
        from qa_lib.store import open_store

        location, stage, key = json.loads(target)
        callbacks.append(CheckpointToStore(open_store(location), stage, key))
    rank0 = int(os.environ.get("RANK", "0")) == 0
    try:
        result = fine_tune(config, datasets.load_from_disk(argv[1]), argv[2], callbacks=callbacks)
    except QAPipelineError as exc:
        if rank0:
            kind = next(c.__name__ for c in type(exc).__mro__ if c.__name__ in _KINDS)
            Path(argv[2], ERROR_FILE).write_text(json.dumps({"kind": kind, "message": str(exc)}))
        raise
    if rank0:
        payload = dataclasses.asdict(result) | {"world_size": int(os.environ.get("WORLD_SIZE", "1"))}
        Path(argv[2], "train_result.json").write_text(json.dumps(payload))


if __name__ == "__main__":
    main(sys.argv[1:])
