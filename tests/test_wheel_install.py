"""The README's Pi install, as a user does it: a wheel with the runtime dependencies only.

Builds the wheel from a copy of this checkout, installs it into a fresh venv without the
`train` extra (so no TensorFlow, no librosa), and runs `soundmon classify` and
`soundmon run --source` from an unrelated directory: the shipped model must be found as
package data, not beside the source tree. Needs pip to reach PyPI (or its cache) for the
runtime dependencies; skips with that reason when it cannot.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.paths import REPO, bundled_clips

pytestmark = pytest.mark.slow

# What a checkout holds that a wheel build must not see (local state, caches, venvs).
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".cache", "build", "dist", "*.egg-info", "runs", "state", "demo-state",
    "__pycache__", ".pytest_cache", ".ruff_cache", "*_cv", "*.weights.h5",
)  # fmt: skip


def _run(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the soundmon wheel and its runtime dependencies; returns its bin/."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=_NOT_SOURCE)
    dist = root / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)], root)
    if built.returncode != 0:
        if "No matching distribution" in built.stderr or "Could not find" in built.stderr:
            pytest.skip(f"cannot build the wheel: pip cannot reach PyPI for setuptools ({built.stderr.strip()[-200:]})")
        raise AssertionError(f"wheel build failed:\n{built.stderr[-3000:]}")
    (wheel,) = dist.glob("soundmon-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    installed = _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)], root)
    if installed.returncode != 0:
        if "No matching distribution" in installed.stderr or "Could not find" in installed.stderr:
            pytest.skip(f"cannot install the runtime dependencies from PyPI ({installed.stderr.strip()[-200:]})")
        raise AssertionError(f"pip install of the wheel failed:\n{installed.stderr[-3000:]}")
    return bin_dir


def test_wheel_holds_the_shipped_bundles_and_no_training_artefacts(wheel_venv: Path) -> None:
    site = _run([str(wheel_venv / "python"), "-c", "import soundmon_models, pathlib; "
                 "print(pathlib.Path(soundmon_models.__file__).parent)"], wheel_venv)  # fmt: skip
    assert site.returncode == 0, site.stderr
    models = Path(site.stdout.strip())
    assert "site-packages" in models.parts
    names = {p.name for p in models.iterdir()}
    for bundle in ("urban10", "urban10_start"):
        assert {f"{bundle}.tflite", f"{bundle}.stream.tflite", f"{bundle}.json", f"{bundle}.md"} <= names
    assert not [n for n in names if n.endswith(".weights.h5") or n.endswith("_cv")]


def test_runtime_install_has_no_tensorflow_or_librosa(wheel_venv: Path) -> None:
    for module in ("tensorflow", "librosa", "keras"):
        probe = _run([str(wheel_venv / "python"), "-c", f"import {module}"], wheel_venv)
        assert probe.returncode != 0, f"{module} is importable in the runtime-only venv"
    assert "ModuleNotFoundError" in probe.stderr


def test_classify_from_any_directory_finds_the_shipped_model(wheel_venv: Path, tmp_path: Path) -> None:
    clip = shutil.copy(bundled_clips()[0], tmp_path / "clip.flac")
    out = _run([str(wheel_venv / "soundmon"), "classify", "--json", str(clip)], tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[0])
    assert result["file"].endswith("clip.flac")
    assert set(result["scores"]) >= {"siren", "dog_bark", "gun_shot"}
    assert "model.path" not in out.stderr


def test_run_a_file_source_from_any_directory(wheel_venv: Path, tmp_path: Path) -> None:
    clip = shutil.copy(REPO / "demo" / "street_demo.flac", tmp_path / "street.flac")
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"mqtt": {"enabled": False}, "storage": {"state_dir": str(tmp_path / "st")}}))
    out = _run([str(wheel_venv / "soundmon"), "run", "--source", str(clip), "--pace", "fast", "--print",
                "--config", str(config)], tmp_path, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "starting: model urban10" in out.stderr
    assert "START siren" in out.stdout  # the demo recording opens with a siren
