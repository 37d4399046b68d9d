"""README.md and docs/*.md name only things that exist, and the README's MQTT contract is the design's.

What a reader can follow: a repository path in backticks or a link (`models/urban10.md`,
`docs/soak.md`, a bundle such as `models/urban10`), a link's `#anchor` in a Markdown file, a
`make` target (it must have a rule that does something: a `.PHONY` name alone is not one), a
module (`python -m training.evaluation.onset_streams`, `monitor.frontend`) and a `soundmon` subcommand with
its options. Paths inside fenced code blocks are commands' arguments (outputs such as
`--out models/home` need not exist) and are not checked; the commands in them are. Unit tests:
no TensorFlow, no processes (the `soundmon` options come from the argument parsers' help).
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
from pathlib import Path

import pytest

from tests.paths import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DESIGN = REPO.parent / "shared" / "DESIGN.md"

# Top-level names a repository path in prose starts with (the layout the project was specified with).
TOP_DIRS = {"monitor", "training", "models", "systemd", "tests", "tools", "docs", "demo"}
TOP_FILES = {"config.yaml", "Makefile", "pyproject.toml", "LICENSE", "README.md"}
PACKAGES = ("monitor", "training", "tools", "tests")

FENCE = re.compile(r"^```.*?$(.*?)^```[ \t]*$", re.M | re.S)
SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
MAKE = re.compile(r"(?:^|&&\s*|;\s*)make\s+([a-z][\w-]*)")
_PACKAGE = "(?:" + "|".join(PACKAGES) + ")"
PYTHON_M = re.compile(r"python3?\s+-m\s+(" + _PACKAGE + r"(?:\.\w+)*)")
SOUNDMON = re.compile(r"(?:^|&&\s*|;\s*|/bin/)soundmon\s+([a-z]+)([^#|;&\n]*)")
DOTTED = re.compile("^" + _PACKAGE + r"(?:\.\w+)+$")


def split_markdown(text: str) -> tuple[list[str], str]:
    """(the fenced code blocks, with `\\`-continued lines joined; the prose without them)."""
    blocks = [m.group(1).replace("\\\n", " ") for m in FENCE.finditer(text)]
    return blocks, FENCE.sub("", text)


def heading_anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(md: Path) -> set[str]:
    text = split_markdown(md.read_text())[1]
    return {heading_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def _repo_path(token: str) -> str | None:
    """`token` as a path relative to the repository if it looks like one of its files, else None."""
    token = token.rstrip(".,:;")
    if not token or any(c in token for c in "<>*{}$ |\\") or token.startswith(("/", "~", ".", "http")):
        return None
    first = token.split("/", 1)[0]
    if token in TOP_FILES or (first in TOP_DIRS and "/" in token):
        return token
    return None


def path_exists(rel: str) -> bool:
    """A file or folder of the repository, or a model bundle named without its suffix."""
    p = REPO / rel
    return p.exists() or p.with_name(p.name + ".json").is_file()


def code_lines(text: str) -> list[str]:
    """Every line of the fenced blocks and every code span in the prose: where commands are."""
    blocks, prose = split_markdown(text)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return lines + [m.group(1).strip() for m in SPAN.finditer(prose)]


def dead_references(text: str, where: Path) -> list[str]:
    """What `text` (a Markdown file at `where`) names that does not exist, one line each."""
    dead: list[str] = []
    _, prose = split_markdown(text)
    for m in SPAN.finditer(prose):
        token = m.group(1).strip()
        rel = _repo_path(token)
        if rel is not None and not path_exists(rel):
            dead.append(f"path `{token}`")
        if DOTTED.match(token) and not module_prefix_exists(token):
            dead.append(f"module `{token}`")
    for m in LINK.finditer(prose):
        target = m.group(1)
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file_part, _, anchor = target.partition("#")
        md = (where.parent / file_part).resolve() if file_part else where
        if not md.is_relative_to(REPO.resolve()) or not md.exists():
            dead.append(f"link ({target})")
        elif anchor and md.suffix == ".md" and anchor not in anchors(md):
            dead.append(f"link ({target}): no such heading")
    for line in code_lines(text):
        dead += [f"make {t}" for t in MAKE.findall(line) if t not in make_targets()]
        dead += [f"python -m {mod}" for mod in PYTHON_M.findall(line) if not module_runs(mod)]
        for sub, rest in SOUNDMON.findall(line):
            options = soundmon_options(sub)
            if options is None:
                dead.append(f"soundmon {sub}")
                continue
            dead += [f"soundmon {sub} {opt}" for opt in re.findall(r"(?<![\w-])--[\w-]+", rest) if opt not in options]
    return dead


@functools.cache
def make_targets() -> frozenset[str]:
    """Makefile targets with a rule that has a recipe or prerequisites."""
    lines = (REPO / "Makefile").read_text().splitlines()
    targets = set()
    for i, line in enumerate(lines):
        m = re.match(r"^([a-z][\w-]*)\s*:(?!=)(.*)$", line)
        if m is None:
            continue
        has_recipe = i + 1 < len(lines) and lines[i + 1].startswith("\t")
        if has_recipe or m.group(2).strip():
            targets.add(m.group(1))
    return frozenset(targets)


def _module_file(dotted: str) -> Path | None:
    base = REPO.joinpath(*dotted.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def module_runs(dotted: str) -> bool:
    """`python -m dotted` finds a module of this repository (a package needs a __main__)."""
    found = _module_file(dotted)
    return found is not None and (found.name != "__init__.py" or (found.parent / "__main__.py").is_file())


def module_prefix_exists(dotted: str) -> bool:
    """`monitor.frontend.YAMNET_FRONTEND`: the package and its module exist (the rest may be names in it)."""
    parts = dotted.split(".")
    return _module_file(".".join(parts[:2])) is not None


@functools.cache
def soundmon_options(sub: str) -> frozenset[str] | None:
    """The options `soundmon SUB --help` lists, or None if there is no such subcommand."""
    from monitor.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([sub, "--help"])
        except SystemExit as exc:
            code = exc.code
    if code != 0:
        return None
    return frozenset(re.findall(r"(?<![\w-])--[\w-]+", out.getvalue()))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_reference_exists(doc: Path):
    assert dead_references(doc.read_text(), doc) == []


def test_the_checks_find_dead_references():
    """Each kind of reference that does not exist is reported (and the ones that do are not)."""
    text = (
        "See `models/urban10.md`, `models/urban10`, `models/nope.md`, [x](docs/nope.md), "
        "[y](README.md#no-such-heading), `monitor.frontend.LogMelFrontend`, `monitor.nope.x`.\n\n"
        "```sh\nmake test\nmake soak\npython -m training.attach_start --model m --start s\n"
        "python -m training.nope\nsoundmon run --print \\\n    --nope\nsoundmon frobnicate\n```\n"
    )
    assert dead_references(text, REPO / "README.md") == [
        "path `models/nope.md`",
        "module `monitor.nope.x`",
        "link (docs/nope.md)",
        "link (README.md#no-such-heading): no such heading",
        "make soak",
        "python -m training.nope",
        "soundmon run --nope",
        "soundmon frobnicate",
    ]


def test_the_readme_mqtt_contract_is_the_design():
    """README's "MQTT contract" table is DESIGN.md's, row for row (topics, payloads, QoS / retain)."""
    if not DESIGN.is_file():
        pytest.skip(f"needs {DESIGN} (the design notes beside this checkout)")
    design = DESIGN.read_text().split("\n## MQTT contract", 1)[1].split("\n## ", 1)[0]
    readme = (REPO / "README.md").read_text().split("\n## MQTT contract\n", 1)[1].split("\n## ", 1)[0]
    design_rows = [line.strip() for line in design.splitlines() if line.startswith("| `")]
    table = readme.split("\n\n| topic |", 1)[1].split("\n\n", 1)[0]
    readme_rows = [line.strip() for line in table.splitlines() if line.startswith("| `")]
    assert len(design_rows) == 9
    assert readme_rows == design_rows
