"""Detector metrics on recordings: the counting rules with plain numbers, then the real pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.paths import demo_as_labelled_recordings, need_shipped_model
from training.evaluation.segment_metrics import RecordingTally, tally_recording


def test_segment_counts_per_whole_second() -> None:
    # a siren labelled over [2.5, 5.0): seconds 2, 3, 4 are true
    occ = [("siren", 2.5, 5.0)]
    # an event over [3.0, 6.2]: seconds 3, 4 right, 5 and 6 predicted but not true; second 2 missed
    tally = tally_recording([("siren", 3.0, 6.2)], occ, duration_s=10.0, hop_s=0.5)
    assert (tally.tp, tally.fp, tally.fn) == (2, 2, 1)
    assert tally.per_class == {"siren": [2, 2, 1]}
    assert tally.f1 == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))


def test_a_zero_length_event_marks_its_second_and_counts_as_short() -> None:
    tally = tally_recording([("siren", 4.0, 4.0)], [("siren", 3.0, 5.0)], duration_s=8.0, hop_s=0.5)
    assert (tally.tp, tally.fp, tally.fn) == (1, 0, 1)
    assert tally.short_events == 1


def test_other_class_alarms_are_events_of_classes_not_labelled_in_the_recording() -> None:
    events = [("siren", 1.0, 3.0), ("children_playing", 5.2, 5.2), ("children_playing", 10.0, 10.0)]
    tally = tally_recording(events, [("siren", 0.0, 4.0)], duration_s=30.0, hop_s=0.5)
    assert tally.other_class_alarms == 2
    assert tally.alarms_per_minute == pytest.approx(4.0)
    # they are not segment false positives: only classes labelled in the recording are scored
    assert (tally.tp, tally.fp, tally.fn) == (3, 0, 1)


def test_tallies_add_up_over_recordings() -> None:
    a = tally_recording([("siren", 0.0, 1.5)], [("siren", 0.0, 2.0)], 60.0, 0.5)
    b = tally_recording([("dog_bark", 0.0, 0.0)], [("siren", 0.0, 2.0)], 60.0, 0.5)
    total = RecordingTally() + a + b
    assert (total.tp, total.fn, total.other_class_alarms, total.seconds) == (2, 2, 1, 120.0)
    assert total.per_class == {"siren": [2, 0, 2]}
    assert total.summary()["other_class_alarms_per_minute"] == 0.5


def test_evaluate_reports_the_detector_on_a_labelled_recording(tmp_path: Path) -> None:
    """`soundmon evaluate --recordings` on the bundled demo (labels in demo time)."""
    from training.evaluation.detector_metrics import (
        detector_metrics_on_recordings,
        format_detector_lines,
    )

    model = need_shipped_model()
    rec = demo_as_labelled_recordings(tmp_path)  # labels in demo time, as labels.csv wants them
    rep = detector_metrics_on_recordings(model, rec)
    det = rep["detector"]["all"]
    assert det["recordings"] == 1 and det["minutes"] == pytest.approx(0.55, abs=0.01)
    assert det["segment_f1"] > 0.5  # the siren, the dog bark and the gun shots are found
    assert det["other_class_alarms"] == sum(
        1 for e in rep["per_file"][0]["events"] if e["label"] not in {"siren", "dog_bark", "gun_shot"}
    )
    # fsID 900001 is no UrbanSound8K recording: unseen when the dataset is here, unknown if not
    assert set(rep["detector"]) in ({"all", "unseen"}, {"all", "unknown"})
    assert format_detector_lines(rep)[0].startswith("all (1 recordings, 0.6 min): segment F1 ")


def test_evaluate_sure_at_says_how_soon_the_start_model_is_sure_of_each_onset(tmp_path: Path) -> None:
    """`soundmon evaluate --recordings --sure-at 0.5,0.9`: per split, how many labelled onsets the
    start model ranks top at each threshold and after how long: the floor under any setting's
    latency, beside the detector's own."""
    from training.cli import evaluate_main
    from training.evaluation.detector_metrics import detector_metrics_on_recordings

    model = need_shipped_model()
    rec = demo_as_labelled_recordings(tmp_path)
    rep = detector_metrics_on_recordings(model, rec, sure_at=[0.5, 0.9])
    rows = rep["detector"]["all"]["start_model_sure"]
    assert [r["threshold"] for r in rows] == [0.5, 0.9]
    onsets = rows[0]["onsets"]
    assert onsets >= 3 and all(r["onsets"] == onsets for r in rows)  # the siren, a dog bark, gun shots
    assert rows[1]["reached"] <= rows[0]["reached"] <= onsets  # a higher bar is reached by no more onsets
    assert rows[0]["median_delay_s"] is not None and 0.0 < rows[0]["median_delay_s"] < 2.0
    assert "start_model_sure" not in detector_metrics_on_recordings(model, rec)["detector"]["all"]  # only when asked
    assert evaluate_main(["--model", str(model), "--recordings", str(rec), "--out", str(tmp_path / "ev"),
                          "--sure-at", "0.5"]) == 0  # fmt: skip
    with pytest.raises(SystemExit):  # argparse: one line on stderr, exit 2
        evaluate_main(["--model", str(model), "--recordings", str(rec), "--sure-at", "2"])
