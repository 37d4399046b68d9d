"""Real, tiny int8 bundles for tests: small CNNs trained on the test clips, committed under
tests/data/bundles/ (`python -m tools.make_test_bundles` regenerates them).

The fixtures copy a committed bundle into a session's temporary directory (tests write beside
it) and return its path without suffix (`.../tiny.tflite` + `.../tiny.json` + `.../tiny.weights.h5`,
loadable by `load_bundle`). Nothing here imports TensorFlow: unit tests may use them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.paths import CLIPS

__all__ = ["BUNDLES", "CLIPS", "committed_bundle", "tiny_bundle", "tiny_stream_bundle"]

BUNDLES = Path(__file__).resolve().parent / "data" / "bundles"


def committed_bundle(name: str) -> Path:
    """tests/data/bundles/<name>/tiny (no suffix), or fail saying how to make it."""
    base = BUNDLES / name / "tiny"
    if not base.with_suffix(".tflite").is_file():
        pytest.fail(f"{base}.tflite is missing: run `python -m tools.make_test_bundles`", pytrace=False)
    return base


def _copy(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = committed_bundle(name)
    dst = tmp_path_factory.mktemp(f"{name}_bundle")
    for f in src.parent.iterdir():
        shutil.copy(f, dst / f.name)
    return dst / src.name


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """The `tiny` body (padded along time: whole windows only), with its float weights."""
    return _copy("tiny", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_stream_bundle(tmp_path_factory) -> Path:
    """The tiny bundle with a streaming-exact body (`tiny_s`) and its streaming model."""
    return _copy("tiny_stream", tmp_path_factory)
