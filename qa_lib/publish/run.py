"""Assemble a run folder (model, card, metrics, manifest) and hand it to a target."""

from __future__ import annotations

import json
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
    with tempfile.TemporaryDirectory(prefix="qa-publish-") as tmp:
        folder = assemble(model_dir, metrics, config, fingerprints, run_id, eval_name, v2, Path(tmp) / run_id)
        return target.upload_run(folder, run_id)
