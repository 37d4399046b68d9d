"""Where test data lives: small real clips in the repository, the large set beside it if present."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO / "tests" / "data" / "clips"  # 20 UrbanSound8K clips, 2 per class (ATTRIBUTION.md)
DEMO = REPO / "demo" / "street_demo.flac"
SHARED_DATA = REPO.parent / "shared" / "data"
SHIPPED_MODEL = REPO / "models" / "urban10"


def bundled_clips() -> list[Path]:
    return sorted(CLIPS.glob("fold*/*.flac"))


def need_shared() -> Path:
    """The large ../shared/data collection, or skip the calling test with a reason."""
    if not (SHARED_DATA / "UrbanSound8K").is_dir():
        pytest.skip("needs ../shared/data (the large dataset), which is not beside this checkout")
    return SHARED_DATA


def need_shipped_model() -> Path:
    if not SHIPPED_MODEL.with_suffix(".tflite").is_file():
        pytest.skip("needs the shipped model models/urban10 (not built yet in this checkout)")
    return SHIPPED_MODEL


def demo_as_labelled_recordings(tmp_path: Path) -> Path:
    """The bundled demo as a one-recording folder in the layout of ../shared/data/recordings
    (`900001.flac` and a labels.csv in demo time), for `soundmon evaluate --recordings` and alike."""
    import csv
    import shutil

    rec = tmp_path / "recordings"
    rec.mkdir()
    shutil.copy(DEMO, rec / "900001.flac")
    with (DEMO.parent / "street_demo_labels.csv").open(newline="") as src, (rec / "labels.csv").open("w", newline="") as dst:
        out = csv.writer(dst)
        out.writerow(["fsID", "fold", "class", "classID", "start", "end"])
        for r in csv.DictReader(src):
            out.writerow(["900001", 1, r["class"], 0, r["start"], r["end"]])
    return rec
