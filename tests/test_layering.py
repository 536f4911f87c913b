"""Data flows one way: qa_lib knows nothing of Prefect or of the layers above it, tasks nothing of
flows, and so on up to the command line. Checked on every import statement, those inside functions
included (a lazy import is still a dependency). And the code has no undefined or unused names."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Each layer, and what it must never import: the layers above it (and Prefect, for the core).
FORBIDDEN = {
    "qa_lib": {"prefect", "tasks", "flows", "deployments", "cli"},
    "tasks": {"flows", "deployments", "cli"},
    "flows": {"deployments", "cli"},
    "deployments": {"cli"},
}


def imports(package: str) -> list[tuple[str, int, str]]:
    """(file, line, top-level module) of every absolute import in `package`."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [(str(path.relative_to(ROOT)), node.lineno, name.split(".")[0]) for name in names]
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_layer_imports_a_layer_above_it(package):
    found = imports(package)
    assert len(found) > 10  # the walk saw the package's code
    wrong = [f"{file}:{line} imports {module}" for file, line, module in found if module in FORBIDDEN[package]]
    assert not wrong, wrong


def test_pyflakes_finds_nothing():
    """Undefined names (a NameError waiting in a rarely taken branch) and unused imports or variables."""
    packages = [*FORBIDDEN, "cli", "bench", "tests"]
    out = subprocess.run([sys.executable, "-m", "pyflakes", *packages], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and not out.stdout, out.stdout + out.stderr
