"""Folder of the local `evaluate` module: `evaluate.load(MODULE_PATH[, "v2"])`."""

from pathlib import Path

MODULE_PATH = str(Path(__file__).resolve().parent / "evaluate_squad.py")
