"""Assemble a run folder (model, card, metrics, manifest) and hand it to a target."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from qa_lib.publish.card import model_card
from qa_lib.publish.manifest import build_manifest


def open_target(uri: str):
    if uri.startswith("s3://"):
        from qa_lib.publish.s3_target import S3Target

        return S3Target(uri)
    from qa_lib.publish.local import FolderTarget

    return FolderTarget(uri)


def champion_reference(target: str) -> str:
    """`target`'s champion as a model reference (`<target>/champion`): what `resolve_model` takes."""
    return target.rstrip("/") + "/champion"


def assemble(model_dir: str, metrics: dict, config: dict, fingerprints: dict, run_id: str, eval_name: str,
             v2: bool, dest: Path) -> Path:
    shutil.copytree(model_dir, dest / "model")
    (dest / "model" / "README.md").write_text(
        model_card(f"qa-pipeline-{run_id}", str(config.get("model")), eval_name, metrics, v2))
    (dest / "metrics.json").write_text(json.dumps(metrics, indent=2))
    manifest = build_manifest(dest, config, fingerprints, metrics)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dest


def publish_run(target, model_dir: str, metrics: dict, config: dict, fingerprints: dict, run_id: str,
                eval_name: str, v2: bool) -> str:
    """Upload the assembled run; returns its location. The manifest is written last."""
    sweep_stale_staging()
    # The process id in the name tells a later publish whether this copy's owner is still alive.
    with tempfile.TemporaryDirectory(prefix=f"qa-publish-{os.getpid()}-") as tmp:
        folder = assemble(model_dir, metrics, config, fingerprints, run_id, eval_name, v2, Path(tmp) / run_id)
        return target.upload_run(folder, run_id)


def sweep_stale_staging() -> list[str]:
    """Remove the staging copies of publishes whose process is gone (killed mid-upload: its
    `with` never ran its cleanup). Returns what was removed."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob("qa-publish-*"):
        m = re.match(r"qa-publish-(\d+)-", folder.name)
        if m and folder.is_dir() and not _alive(int(m.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
