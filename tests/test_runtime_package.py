"""`monitor/` is what ships to a Pi: it reads no research data beside the checkout (../shared),
writes nothing into docs/, knows no dataset (UrbanSound8K's slices), has no environment hooks for
benchmarks, and imports neither the training side nor the developer tools. A source scan."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.paths import REPO

MONITOR = sorted((REPO / "monitor").glob("*.py"))
FORBIDDEN_TEXT = ("../shared", "SOUNDMON_BENCH_REPORT", "sliceID", "slices.csv", "labels.csv")
# a path into ../shared or docs/: `REPO.parent / "shared"`, `REPO / "docs"`, "docs/soak.md"
FORBIDDEN_PATH = re.compile(r"^(shared|docs)$|(^|[\s'\"(=])(\.\./)?(shared|docs)/")
FORBIDDEN_PACKAGES = {"training", "tools"}
TRAINING_ENTRY = "_cmd_training"  # monitor/cli.py: the one hand-over to the training extra


def _code_strings(tree: ast.AST) -> list[str]:
    """The string constants of a module that are not docstrings (a docstring may name a path)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }  # fmt: skip
    return [
        node.value for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]  # fmt: skip


def _imported(tree: ast.AST) -> set[str]:
    """Top-level packages the module imports (anywhere in it, lazily too), except inside
    `_cmd_training`: `soundmon train`/`evaluate` hand over to the training extra there."""
    out: set[str] = set()
    skip = {
        id(inner) for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == TRAINING_ENTRY for inner in ast.walk(node)
    }  # fmt: skip
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_the_scan_sees_the_runtime_package():
    assert len(MONITOR) > 20 and REPO / "monitor" / "daemon.py" in MONITOR


@pytest.mark.parametrize("path", MONITOR, ids=lambda p: p.name)
def test_monitor_reads_no_research_data_writes_no_docs_and_has_no_bench_hooks(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    strings = _code_strings(tree)
    for text in FORBIDDEN_TEXT:
        assert not any(text in s for s in strings), f"{path.name}: {text!r}"
    for s in strings:
        assert not FORBIDDEN_PATH.search(s), f"{path.name}: path {s!r}"
    assert "SOUNDMON_BENCH_REPORT" not in path.read_text(encoding="utf-8")


def test_the_training_commands_are_the_one_hand_over_to_the_training_side():
    """`soundmon train`/`evaluate` import `training.cli` (the train extra) in `_cmd_training`."""
    tree = ast.parse((REPO / "monitor" / "cli.py").read_text(encoding="utf-8"))
    entry = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == TRAINING_ENTRY)
    assert any(isinstance(n, ast.ImportFrom) and n.module == "training" for n in ast.walk(entry))


@pytest.mark.parametrize("path", MONITOR, ids=lambda p: p.name)
def test_monitor_imports_neither_training_nor_tools(path: Path):
    assert not _imported(ast.parse(path.read_text(encoding="utf-8"))) & FORBIDDEN_PACKAGES, path.name
