"""The package structure: no import cycles, and the TFLite-only commands never import TensorFlow.

Import cycles are found statically: every `import` of a monitor, training or tools module by
another, at module level or inside a function (a lazy import is still a dependency), except
under `if TYPE_CHECKING:`. The TensorFlow checks run the commands that only need a `.tflite`
bundle in a fresh interpreter (as a user would on a Pi with the runtime set) and look at
`sys.modules` after each.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import CLIPS, REPO, demo_as_labelled_recordings, need_shipped_model

PACKAGES = ("monitor", "training", "tools")


def _module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of PACKAGES."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.AST) -> set[str]:
    """Every module name an `import` in `tree` may bind, outside `if TYPE_CHECKING:` blocks."""
    names: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import mod`
        stack.extend(ast.iter_child_nodes(node))
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of PACKAGES it imports (a package's `__init__` counts as the package)."""
    files = _module_files()
    graph = {}
    for name, path in files.items():
        imported = _imported_names(ast.parse(path.read_text(), str(path)))
        graph[name] = {m for m in imported if m in files and m != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_imports_but_not_type_checking_ones() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from monitor.config import Config\n"
        "def f():\n    from monitor.runner import open_model\n"
    )
    names = _imported_names(tree)
    assert "monitor.runner" in names and "monitor.config" not in names


def test_no_import_cycles_in_monitor_training_or_tools() -> None:
    graph = import_graph()
    assert "monitor.runner" in graph and "training.cli" in graph
    assert import_cycles(graph) == [], "modules that import each other (directly or in a loop)"


# -- TFLite-only commands: no TensorFlow -------------------------------------------------------

# Modules a TFLite-only command imports: the evaluation package, the CLI, and the helpers they use.
TFLITE_ONLY_MODULES = (
    "monitor.cli",
    "training.cli",
    "training.bundle_files",
    "training.float_model",
    "training.attach_start",
    *sorted(
        "training.evaluation" + ("" if p.stem == "__init__" else f".{p.stem}")
        for p in (REPO / "training" / "evaluation").glob("*.py")
    ),
)


def _run_isolated(script: str, timeout: float = 120) -> dict:
    """Run `script` in a fresh interpreter at the repository root; it prints one JSON line last."""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_a_tflite_only_module_does_not_import_tensorflow() -> None:
    """Each module imported in turn in one fresh interpreter; TensorFlow looked for after each."""
    found = _run_isolated(
        "import importlib, json, sys\nfound = {}\n"
        f"for module in {list(TFLITE_ONLY_MODULES)!r}:\n"
        "    importlib.import_module(module)\n"
        "    found[module] = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "print(json.dumps(found))"
    )
    assert set(found) == set(TFLITE_ONLY_MODULES)
    assert {module: mods for module, mods in found.items() if mods} == {}


def _int8_only_bundle(tmp_path: Path) -> Path:
    """The shipped bundle (and the start model it names, if any) with two of their CV fold
    bundles, without float weights (as a wheel has them)."""
    model = need_shipped_model()
    out = tmp_path / "models"
    for name in (model.name, f"{model.name}_start"):
        (out / f"{name}_cv").mkdir(parents=True)
        for suffix in (".tflite", ".json", ".stream.tflite"):
            for src in (model.parent / f"{name}{suffix}", *(model.parent / f"{name}_cv" / f"fold{k}{suffix}" for k in (1, 2))):
                if src.is_file():
                    shutil.copy(src, out / src.relative_to(model.parent))
    return out / model.name


def test_tflite_only_commands_do_not_import_tensorflow(tmp_path: Path) -> None:
    """`soundmon evaluate` on an int8 bundle (--dataset, --cv, --recordings), the onset streams,
    the onset probe, the detector metrics and `--help` of each, one after the other in one fresh
    interpreter: TensorFlow is looked for after each."""
    if not (CLIPS / "metadata.csv").is_file():
        pytest.skip("tests/data/clips (the test clips) not present")
    model = _int8_only_bundle(tmp_path)
    rec = demo_as_labelled_recordings(tmp_path)
    out, cache = str(tmp_path / "out"), str(tmp_path / "cache")
    common = ["--model", str(model), "--dataset", str(CLIPS), "--out", out, "--cache", cache, "--no-progress"]
    commands = {
        "soundmon evaluate --dataset": ("monitor.cli", ["evaluate", *common]),
        "soundmon evaluate --cv": ("monitor.cli", ["evaluate", *common, "--cv"]),
        "soundmon evaluate --recordings": ("monitor.cli", ["evaluate", "--model", str(model), "--recordings",
                                                           str(rec), "--out", out]),
        "python -m training.evaluation.onset_streams": ("training.evaluation.onset_streams",
                                                        ["--model", str(model), "--dataset", str(CLIPS)]),
        "python -m training.evaluation.onset_probe": ("training.evaluation.onset_probe",
                                                      ["--model", f"{model}_cv/fold1", "--dataset", str(CLIPS),
                                                       "--fold", "1"]),
        "python -m training.evaluation.detector_metrics": ("training.evaluation.detector_metrics",
                                                           ["--model", str(model), "--recordings", str(rec)]),
    }  # fmt: skip
    for name, (module, _args) in list(commands.items()):
        prog = "soundmon evaluate" if module == "monitor.cli" else name
        args = ["evaluate", "--help"] if module == "monitor.cli" else ["--help"]
        commands.setdefault(f"{prog} --help", (module, args))
    script = f"""
import contextlib, importlib, io, json, sys
found = {{}}
for name, (module, args) in {list(commands.items())!r}:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            rc = importlib.import_module(module).main(args)
        except SystemExit as exc:  # --help
            rc = exc.code
    found[name] = [rc, sorted(m for m in ("tensorflow", "keras") if m in sys.modules)]
print(json.dumps(found))
"""
    found = _run_isolated(script, timeout=300)
    assert {name: rc for name, (rc, _) in found.items()} == dict.fromkeys(found, 0)
    assert {name: mods for name, (_, mods) in found.items() if mods} == {}, "TFLite-only commands imported TensorFlow"
    assert (tmp_path / "out" / "cv.md").is_file() and (tmp_path / "out" / "detector.json").is_file()
