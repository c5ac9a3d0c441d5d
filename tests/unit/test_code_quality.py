"""The codebase stays ruff-clean, mypy --strict clean, and its imports point inward only."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "trustauthority"

#: the pure core: wire formats, verification, policy. No I/O, no service or CLI layers.
PURE = ("tpm", "eventlog", "verify", "policy", "audit", "token", "keyrelease")
#: what a pure module may never import
FORBIDDEN_IN_PURE = (
    "trustauthority.agent", "trustauthority.cli", "trustauthority.store",
    "trustauthority.service", "trustauthority.api", "trustauthority.client",
    "subprocess", "socket", "sqlalchemy", "fastapi", "httpx", "tpm2_pytss", "typer", "rich",
)


def _tool(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (run scripts/bootstrap)")
    return found


def test_ruff_is_clean() -> None:
    result = subprocess.run([_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict_is_clean() -> None:
    result = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", PURE)
def test_pure_core_imports_point_inward(layer: str) -> None:
    offenders = []
    for path in sorted((PACKAGE / layer).rglob("*.py")) if (PACKAGE / layer).exists() else []:
        for name in _imports(path):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN_IN_PURE):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_the_import_check_catches_an_offender(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text("import subprocess\nfrom trustauthority.cli import main\n")
    assert {"subprocess", "trustauthority.cli"} <= _imports(sample)


#: the service layers, inside out; each may import only the layers listed before it (and the
#: pure core), never one after it
LAYERS = ("store", "service", "api", "client", "cli")
#: adapters to key servers sit beside the store: the services use them, they use none of us
ADAPTERS = ("keyserver",)


def _layer_files(layer: str) -> list[Path]:
    directory = PACKAGE / layer
    return sorted(directory.rglob("*.py")) if directory.exists() else []


@pytest.mark.parametrize("layer", LAYERS[:-1] + ADAPTERS)
def test_service_layers_import_inward_only(layer: str) -> None:
    outer = {
        "keyserver": ("store", "service", "api", "client", "cli", "agent"),
        "store": ("service", "api", "client", "cli", "agent"),
        "service": ("api", "client", "cli", "agent"),
        "api": ("client", "cli", "agent"),
        "client": ("api", "service", "store", "cli", "agent"),
    }[layer]
    offenders = []
    for path in _layer_files(layer):
        for name in _imports(path):
            for bad in outer:
                module = f"trustauthority.{bad}"
                if name == module or name.startswith(module + "."):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert _layer_files(layer), f"no files found for layer {layer}"
    assert not offenders, "\n".join(offenders)
