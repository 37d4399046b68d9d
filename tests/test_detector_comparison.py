"""`python -m tools.detector_comparison`: the model card's side-by-side detector table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tests.paths import CLIPS, demo_as_labelled_recordings, need_shipped_model
from tools.detector_comparison import main, markdown, parse_row


def test_a_row_names_a_model_and_optionally_a_config() -> None:
    assert parse_row("new default=models/urban10") == ("new default", Path("models/urban10"), None)
    assert parse_row("off=models/urban10:off.yaml") == ("off", Path("models/urban10"), Path("off.yaml"))
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=MODEL"):
        parse_row("models/urban10")


def test_the_table_has_a_line_per_row_and_a_dash_where_a_model_has_no_streams() -> None:
    unseen = {"segment_f1": 0.74, "segment_precision": 0.72, "segment_recall": 0.75,
              "other_class_alarms_per_minute": 2.06, "other_class_alarms": 11,
              "median_onset_latency_s": 1.49, "events": 23, "short_events": 0}  # fmt: skip
    streams = [{"fold": 1, "onsets": 100, "answered": 50, "median_delay_s": 1.25, "event_precision": 0.75,
                "segment_f1": 0.375, "short_events": 2},
               {"fold": 2, "onsets": 10, "answered": 4, "median_delay_s": None, "event_precision": None,
                "segment_f1": None, "short_events": 0}]  # fmt: skip
    table = markdown([{"name": "new", "unseen": unseen, "streams": streams},
                      {"name": "teacher", "unseen": unseen, "streams": None}])  # fmt: skip
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[2] == ("| new | 0.74 (0.72 / 0.75) | 2.06 (11) | 1.49 s | 0 of 23 | 50 % / 40 % "
                        "| 1.25 s / - | 75 % / - | 0.38 / - | 2 / 0 |")  # fmt: skip
    assert lines[3].endswith("| 0 of 23 | - | - | - | - | - |")


def test_the_shipped_model_with_and_without_fast_start_on_the_demo(tmp_path: Path, capsys) -> None:
    """Two rows of one bundle, the second with a config; the bundle's CV fold models stream the
    bundled test clips' folds."""
    model = need_shipped_model()
    rec = demo_as_labelled_recordings(tmp_path)
    off = tmp_path / "off.yaml"
    off.write_text("detection:\n  fast_start_threshold: null\n")
    out_json, out_md = tmp_path / "cmp.json", tmp_path / "cmp.md"
    rc = main(["--recordings", str(rec), "--dataset", str(CLIPS), "--row", f"default={model}",
               "--row", f"fast start off={model}:{off}", "--json-out", str(out_json), "--md-out", str(out_md)])  # fmt: skip
    assert rc == 0
    results = json.loads(out_json.read_text())
    assert [r["name"] for r in results] == ["default", "fast start off"]
    for r in results:
        split = r["unseen"] or {}
        assert r["streams"] and [s["fold"] for s in r["streams"]] == [1, 2]
        assert split == {} or split["recordings"] == 1  # unseen when ../shared is here, else "unknown"
    assert out_md.read_text().count("\n") == 4
    assert "| fast start off |" in capsys.readouterr().out


def test_a_missing_model_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    rec = demo_as_labelled_recordings(tmp_path)
    assert main(["--recordings", str(rec), "--row", f"x={tmp_path / 'nope'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("detector_comparison: ")
