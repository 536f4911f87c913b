"""manifest.json: every published file with size and sha256, plus what produced the model."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from qa_lib.hashing import sha256_file

SECRET_HINTS = ("token", "secret", "password", "aws_access_key", "aws_secret")


def code_version() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"qa-pipeline=={version('qa-pipeline')}"


def scrub(obj: Any) -> Any:
    """Drop any key that looks like a credential, at any depth."""
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items() if not any(h in k.lower() for h in SECRET_HINTS)}
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    return obj


def build_manifest(folder: Path, config: dict, fingerprints: dict, metrics: dict) -> dict:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")
    return {
        "files": {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in files},
        "config": scrub(config),
        "fingerprints": fingerprints,
        "code_version": code_version(),
        "metrics": metrics,
    }
