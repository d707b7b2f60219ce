"""The house rules, checked: small modules and functions, and no pipeline code that
asks a layer or backbone for its name (the registry and the contract answer instead)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from legcf_core.registry import BACKBONES, LAYERS

ROOT = Path(__file__).resolve().parents[1]
ENGINE = sorted((ROOT / "legcf_core").rglob("*.py"))
CLI = sorted((ROOT / "legcf_cli").rglob("*.py"))
NAMES = set(LAYERS) | set(BACKBONES)
# Where names are data rather than behaviour: the registry, the tuned values, the paper's named sets.
NAME_TABLES = {"registry.py", "tuning.py", "sets.py"}


def _functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


@pytest.mark.parametrize("path", ENGINE, ids=lambda p: str(p.relative_to(ROOT)))
def test_engine_modules_stay_under_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400


@pytest.mark.parametrize("path", ENGINE + CLI, ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_stay_under_60_lines(path):
    sizes = {f.name: f.end_lineno - f.lineno + 1 for f in _functions(path)}
    long = [f"{name} ({lines})" for name, lines in sizes.items() if lines > 60]
    assert not long, f"functions over 60 lines: {', '.join(long)}"


def _compared_names(path: Path) -> list[str]:
    """Registered layer or backbone names used in a comparison (==, !=, in) in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                for const in ast.walk(operand):
                    if isinstance(const, ast.Constant) and const.value in NAMES:
                        found.append(f"{const.value!r} at line {node.lineno}")
    return found


@pytest.mark.parametrize(
    "path", [p for p in ENGINE + CLI if p.name not in NAME_TABLES], ids=lambda p: str(p.relative_to(ROOT))
)
def test_no_pipeline_code_compares_layer_or_backbone_names(path):
    assert not _compared_names(path)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_the_registry_says_what_each_layer_class_says(name):
    """The registry's torch-free flags (read by ``compare`` without loading torch) match the class."""
    entry, kind = LAYERS[name], LAYERS[name].load()
    assert kind.name == name
    assert entry.uses_partition == kind.uses_partition
    assert entry.sized_by_budget == kind.sized_by_budget


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_layer_is_documented(name):
    docs = (ROOT / "README.md").read_text() + (ROOT / "docs" / "baselines.md").read_text()
    assert f"`{name}`" in docs or f" {name} " in docs
