"""The detector as examples: score sequences in, start/end events out.

Windows end every 0.5 s (offsets 0.5, 1.0, 1.5, ...). Unless a test says otherwise the settings
are the config defaults: threshold 0.5, smoothing over 3 windows, release ratio 0.8 (release
level 0.4), hold 1.0 s, cooldown 2.0 s.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitor.detector import DetectionEvent, Detector

HOP = 0.5
LABELS = ["siren", "dog_bark", "car_horn"]


def make(**kw) -> Detector:
    """A detector over LABELS with all labels enabled at threshold 0.5 (overridable)."""
    settings = {
        "thresholds": {label: 0.5 for label in LABELS},
        "enabled": set(LABELS),
        "smoothing_windows": 3,
        "release_ratio": 0.8,
        "hold_seconds": 1.0,
        "cooldown_seconds": 2.0,
    }
    settings.update(kw)
    return Detector(LABELS, **settings)


def row(siren: float = 0.0, dog_bark: float = 0.0, car_horn: float = 0.0) -> np.ndarray:
    return np.array([siren, dog_bark, car_horn], dtype=np.float32)


def feed(det: Detector, rows: list, first_offset: float = HOP) -> list[tuple[float, DetectionEvent]]:
    """Feed windows HOP apart; return (offset of the window, event) for every event."""
    out = []
    for i, scores in enumerate(rows):
        offset = first_offset + i * HOP
        out.extend((offset, ev) for ev in det.update(offset, scores))
    return out


def feed_siren(det: Detector, values: list[float | None], first_offset: float = HOP):
    return feed(det, [None if v is None else row(siren=v) for v in values], first_offset)


# -- onset, offset, smoothing -------------------------------------------------------------------


def test_onset_waits_for_the_smoothed_score():
    # Smoothed: 0.9/1 = 0.9 already reaches 0.5 on the first window (mean of those available).
    det = make()
    events = feed_siren(det, [0.9])
    assert [(t, e.type, e.label) for t, e in events] == [(0.5, "start", "siren")]
    assert events[0][1].start_offset_s == 0.5
    assert events[0][1].score == pytest.approx(0.9)
    assert events[0][1].end_offset_s is None and events[0][1].duration_s is None

    # After two quiet windows, a loud window is averaged with them: 0.9/3 = 0.3, then 0.6.
    det = make()
    events = feed_siren(det, [0.0, 0.0, 0.9, 0.9])
    assert [(t, e.type) for t, e in events] == [(2.0, "start")]
    assert events[0][1].score == pytest.approx(0.6)


def test_smoothing_suppresses_a_one_window_spike():
    det = make()
    events = feed_siren(det, [0.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # smoothed peaks at 1/3 < 0.5
    assert events == []
    assert det.smoothed[0] == pytest.approx(0.0)
    # The same spike with smoothing off fires.
    det = make(smoothing_windows=1)
    assert [e.type for _, e in feed_siren(det, [0.0, 0.0, 1.0, 0.0])] == ["start"]


def test_a_steady_class_can_ask_for_more_windows_than_a_sharp_one():
    # The same 1.5 s burst for both labels: the siren (N = 3) fires, the car horn asked for 7
    # windows of evidence (as models/urban10 asks of its steady classes) does not.
    det = make(class_smoothing={"car_horn": 7})
    burst = [row(siren=0.9, car_horn=0.9)] * 3 + [row()] * 4
    events = feed(det, [row()] * 4 + burst)
    assert {e.label for _, e in events if e.type == "start"} == {"siren"}
    assert det.smoothed[2] == pytest.approx(3 * 0.9 / 7)  # its highest: the 7 newest hold the 3 loud ones

    # Held for 4 windows (2 s) it reaches 4 x 0.9 / 7 = 0.51 on the 4th loud window.
    det = make(class_smoothing={"car_horn": 7})
    events = feed(det, [row()] * 4 + [row(car_horn=0.9)] * 4)
    assert [(t, e.label) for t, e in events] == [(4.0, "car_horn")]
    assert events[0][1].score == pytest.approx(4 * 0.9 / 7)


def test_a_label_with_its_own_smoothing_averages_what_exists_at_first():
    det = make(smoothing_windows=1, class_smoothing={"siren": 4})
    feed(det, [row(siren=0.8, dog_bark=0.2), row(siren=0.4, dog_bark=0.6)])
    assert det.smoothed.tolist() == pytest.approx([0.6, 0.6, 0.0])  # siren: mean of 2 so far; dog bark: newest


def test_per_label_smoothing_is_checked_like_the_one_number():
    with pytest.raises(ValueError, match=r"class_smoothing\[siren\] must be an integer in \[1, 100\]"):
        make(class_smoothing={"siren": 0})
    with pytest.raises(ValueError, match="unknown label"):
        make(class_smoothing={"owl": 5})


def test_offset_ends_after_hold_at_last_window_above_release():
    det = make()
    # smoothed:        0.8  0.8  0.8  0.533 0.267 0.0  0.0
    # offsets:         0.5  1.0  1.5  2.0   2.5   3.0  3.5
    events = feed_siren(det, [0.8, 0.8, 0.8, 0.0, 0.0, 0.0, 0.0])
    kinds = [(t, e.type) for t, e in events]
    # 2.0 is still above the release level 0.4; 2.5 is the first below; hold 1.0 s from 2.0 -> 3.0.
    assert kinds == [(0.5, "start"), (3.0, "end")]
    start, end = events[0][1], events[1][1]
    assert end.id == start.id
    assert end.start_offset_s == 0.5
    assert end.end_offset_s == 2.0  # the hold does not inflate the event
    assert end.duration_s == pytest.approx(1.5)
    assert end.score == pytest.approx(0.0)  # smoothed score at the end decision
    assert end.peak_score == pytest.approx(0.8)
    assert det.active == {}


def test_hysteresis_keeps_an_event_between_release_level_and_threshold():
    det = make(smoothing_windows=1)
    # 0.45 is below the 0.5 threshold but above the 0.4 release level: still one event.
    events = feed_siren(det, [0.6, 0.45, 0.45, 0.45, 0.45, 0.3, 0.3, 0.3])
    assert [(t, e.type) for t, e in events] == [(0.5, "start"), (3.5, "end")]
    assert events[1][1].end_offset_s == 2.5


def test_zero_hold_ends_on_the_first_window_below_release():
    det = make(smoothing_windows=1, hold_seconds=0.0)
    events = feed_siren(det, [0.9, 0.9, 0.1])
    assert [(t, e.type) for t, e in events] == [(0.5, "start"), (1.5, "end")]
    assert events[1][1].end_offset_s == 1.0


def test_a_single_window_event_has_duration_zero():
    det = make(smoothing_windows=1, hold_seconds=0.0)
    events = feed_siren(det, [0.9, 0.0])
    assert events[1][1].duration_s == 0.0


# -- flicker, cooldown ----------------------------------------------------------------------------


def test_flicker_shorter_than_hold_is_one_event():
    # A siren that keeps dipping for one window (below release) is one event, not many.
    det = make(smoothing_windows=1)
    pattern = [0.9, 0.1] * 10 + [0.0] * 5
    events = feed_siren(det, pattern)
    assert [e.type for _, e in events] == ["start", "end"]
    start, end = events[0][1], events[1][1]
    assert start.id == end.id
    assert end.end_offset_s == pytest.approx(0.5 + 18 * HOP)  # the last 0.9 window
    assert end.peak_score == pytest.approx(0.9)


def test_dip_longer_than_hold_splits_and_cooldown_delays_the_restart():
    det = make(smoothing_windows=1)
    # on at 0.5; below from 1.0; ends at 1.5 + ... : last above 0.5, hold 1.0 -> end decided at 1.5.
    values = [0.9, 0.0, 0.0, 0.9, 0.9, 0.9, 0.9, 0.9]
    events = feed_siren(det, values)
    kinds = [(t, e.type) for t, e in events]
    # End decided at 1.5 -> cooldown until 3.5: the loud windows at 2.0, 2.5, 3.0 cannot start.
    assert kinds == [(0.5, "start"), (1.5, "end"), (3.5, "start")]
    assert events[0][1].id != events[2][1].id
    assert events[2][1].start_offset_s == 3.5


def test_zero_cooldown_restarts_on_the_next_loud_window():
    det = make(smoothing_windows=1, hold_seconds=0.0, cooldown_seconds=0.0)
    events = feed_siren(det, [0.9, 0.0, 0.9])
    assert [(t, e.type) for t, e in events] == [(0.5, "start"), (1.0, "end"), (1.5, "start")]


# -- labels ---------------------------------------------------------------------------------------


def test_two_overlapping_classes_are_independent():
    det = make(smoothing_windows=1, hold_seconds=0.0)
    rows = [
        row(siren=0.9),
        row(siren=0.9, dog_bark=0.7),
        row(siren=0.9, dog_bark=0.7),
        row(dog_bark=0.7),
        row(),
    ]
    events = feed(det, rows)
    assert [(t, e.type, e.label) for t, e in events] == [
        (0.5, "start", "siren"),
        (1.0, "start", "dog_bark"),
        (2.0, "end", "siren"),
        (2.5, "end", "dog_bark"),
    ]
    siren_end = events[2][1]
    bark_end = events[3][1]
    assert (siren_end.start_offset_s, siren_end.end_offset_s) == (0.5, 1.5)
    assert (bark_end.start_offset_s, bark_end.end_offset_s) == (1.0, 2.0)


def test_both_active_at_once():
    det = make(smoothing_windows=1)
    feed(det, [row(siren=0.9, car_horn=0.8)])
    assert set(det.active) == {"siren", "car_horn"}
    assert det.active["siren"].type == "start"


def test_disabled_class_never_fires():
    det = make(enabled={"siren", "car_horn"})
    events = feed(det, [row(dog_bark=1.0)] * 20)
    assert events == []
    assert det.smoothed[1] == pytest.approx(1.0)  # still smoothed, ready if enabled later


def test_per_class_thresholds():
    det = make(thresholds={"siren": 0.9, "dog_bark": 0.3, "car_horn": 0.5}, smoothing_windows=1)
    events = feed(det, [row(siren=0.8, dog_bark=0.35)])
    assert [e.label for _, e in events] == ["dog_bark"]


def test_ends_come_before_starts_in_one_window():
    det = make(smoothing_windows=1, hold_seconds=0.0)
    events = feed(det, [row(siren=0.9), row(dog_bark=0.9)])
    assert [(e.type, e.label) for _, e in events] == [("start", "siren"), ("end", "siren"), ("start", "dog_bark")]


# -- gated windows ---------------------------------------------------------------------------------


def test_gated_windows_count_as_silence_and_end_events():
    det = make()
    events = feed_siren(det, [0.9, 0.9, 0.9, None, None, None, None, None])
    assert [(t, e.type) for t, e in events] == [(0.5, "start"), (3.0, "end")]
    # smoothed at 2.0 = 0.6 (>= 0.4, still above), 2.5 = 0.3 below: hold from 2.0 -> end at 3.0.
    assert events[1][1].end_offset_s == 2.0
    assert det.smoothed.tolist() == [0.0, 0.0, 0.0]


def test_gated_windows_alone_never_start_anything():
    det = make()
    assert feed_siren(det, [None] * 10) == []


def test_nan_scores_count_as_zero():
    det = make(smoothing_windows=1)
    assert feed(det, [np.array([math.nan, 0.0, 0.0])]) == []


# -- reconfigure (SIGHUP) -----------------------------------------------------------------------------


def test_reconfigure_threshold_mid_event_uses_new_release_level_next_window():
    det = make(smoothing_windows=1)
    feed_siren(det, [0.6, 0.6])
    thresholds = {"siren": 0.9, "dog_bark": 0.5, "car_horn": 0.5}
    assert det.reconfigure(thresholds, set(LABELS), 1, 0.8, 1.0, 2.0) == []
    assert "siren" in det.active  # nothing ends at the reconfigure itself
    # New release level 0.72 > 0.6: below from 1.5; last above 1.0; hold 1.0 -> end decided at 2.0.
    events = feed_siren(det, [0.6, 0.6, 0.6], first_offset=1.5)
    assert [(t, e.type) for t, e in events] == [(2.0, "end")]
    assert events[0][1].end_offset_s == 1.0


def test_reconfigure_lower_threshold_starts_without_losing_history():
    det = make(thresholds={"siren": 0.9, "dog_bark": 0.5, "car_horn": 0.5})
    assert feed_siren(det, [0.6, 0.6, 0.6]) == []
    det.reconfigure({"siren": 0.5, "dog_bark": 0.5, "car_horn": 0.5}, set(LABELS), 3, 0.8, 1.0, 2.0)
    events = feed_siren(det, [0.6], first_offset=2.0)
    assert [(t, e.type) for t, e in events] == [(2.0, "start")]


def test_reconfigure_larger_smoothing_uses_existing_history():
    det = make(smoothing_windows=1)
    feed_siren(det, [0.0, 0.0, 0.0, 0.9])  # started at 2.0 with N=1
    det.reconfigure({label: 0.5 for label in LABELS}, set(LABELS), 4, 0.8, 1.0, 2.0)
    feed_siren(det, [0.9], first_offset=2.5)
    assert det.smoothed[0] == pytest.approx((0.0 + 0.0 + 0.9 + 0.9) / 4)


def test_reconfigure_disable_ends_the_open_event_now():
    det = make(smoothing_windows=1)
    start = feed_siren(det, [0.9, 0.9, 0.9])[0][1]
    ended = det.reconfigure({label: 0.5 for label in LABELS}, {"dog_bark", "car_horn"}, 1, 0.8, 1.0, 2.0)
    assert [(e.type, e.label, e.id) for e in ended] == [("end", "siren", start.id)]
    assert ended[0].end_offset_s == 1.5 and ended[0].duration_s == pytest.approx(1.0)
    assert det.active == {}
    assert feed_siren(det, [0.9] * 10, first_offset=2.0) == []  # stays off


def test_reconfigure_rejects_bad_settings_and_keeps_the_old_ones():
    det = make()
    with pytest.raises(ValueError, match="unknown label"):
        det.reconfigure({"sirne": 0.5}, set(), 3, 0.8, 1.0, 2.0)
    with pytest.raises(ValueError, match="threshold"):
        det.reconfigure({label: 1.5 for label in LABELS}, set(LABELS), 3, 0.8, 1.0, 2.0)
    with pytest.raises(ValueError, match="no threshold"):
        det.reconfigure({}, {"siren"}, 3, 0.8, 1.0, 2.0)
    with pytest.raises(ValueError, match="smoothing_windows"):
        det.reconfigure({label: 0.5 for label in LABELS}, set(LABELS), 0, 0.8, 1.0, 2.0)
    assert det.thresholds == {label: 0.5 for label in LABELS}
    assert det.smoothing_windows == 3


# -- close, reset ---------------------------------------------------------------------------------------


def test_close_ends_open_events_with_their_ids_and_durations():
    det = make(smoothing_windows=1)
    events = feed(det, [row(siren=0.9), row(siren=0.9, dog_bark=0.8), row(siren=0.9, dog_bark=0.1)])
    starts = {e.label: e for _, e in events}
    assert set(starts) == {"siren", "dog_bark"}
    # siren still above at 1.5 -> ends at the stream end 1.8; dog_bark in its hold -> ends at 1.0.
    ended = {e.label: e for e in det.close(1.8)}
    assert ended["siren"].id == starts["siren"].id
    assert ended["dog_bark"].id == starts["dog_bark"].id
    assert ended["siren"].end_offset_s == 1.8 and ended["siren"].duration_s == pytest.approx(1.3)
    assert ended["dog_bark"].end_offset_s == 1.0 and ended["dog_bark"].duration_s == pytest.approx(0.0)
    assert all(e.type == "end" for e in ended.values())
    assert det.active == {}
    assert det.close(2.0) == []  # nothing left to end


def test_close_never_ends_before_the_last_window():
    det = make(smoothing_windows=1)
    feed_siren(det, [0.9] * 8)  # last window ends at 4.0
    (end,) = det.close(1.0)  # e.g. a 1 s file padded to one 4 s window
    assert end.end_offset_s == 4.0 and end.duration_s == pytest.approx(3.5)


def test_reset_after_a_gap_ends_events_and_clears_history():
    det = make()
    start = feed_siren(det, [0.9, 0.9, 0.9])[0][1]
    ended = det.reset()
    assert [(e.type, e.id, e.end_offset_s) for e in ended] == [("end", start.id, 1.5)]
    assert det.active == {} and det.smoothed.tolist() == [0.0, 0.0, 0.0]
    # After the gap smoothing starts afresh (no old 0.9s), and no cooldown blocks a new event.
    events = feed_siren(det, [0.0, 0.9, 0.9], first_offset=10.0)
    assert [(t, e.type) for t, e in events] == [(11.0, "start")]
    assert events[0][1].id != start.id


def test_offsets_must_not_go_backwards_without_reset():
    det = make()
    det.update(2.0, row())
    with pytest.raises(ValueError, match="backwards"):
        det.update(1.0, row())
    det.reset()
    assert det.update(0.5, row()) == []


# -- ids, peaks, edge thresholds ------------------------------------------------------------------------


def test_ids_are_stable_and_unique():
    det = make(smoothing_windows=1, hold_seconds=0.0, cooldown_seconds=0.0)
    events = [e for _, e in feed_siren(det, [0.9, 0.0] * 5)]
    starts = [e for e in events if e.type == "start"]
    ends = [e for e in events if e.type == "end"]
    assert len(starts) == len(ends) == 5
    assert [s.id for s in starts] == [e.id for e in ends]
    assert len({s.id for s in starts}) == 5
    assert all(len(s.id) == 32 and int(s.id, 16) >= 0 for s in starts)
    assert det.active == {}


def test_peak_score_tracks_the_max_smoothed_score():
    det = make(smoothing_windows=1)
    events = feed_siren(det, [0.6, 0.8, 0.95, 0.7, 0.0, 0.0, 0.0])
    start, end = events[0][1], events[1][1]
    assert start.peak_score == pytest.approx(0.6)
    assert end.peak_score == pytest.approx(0.95)
    assert end.score == pytest.approx(0.0)


def test_active_reports_peak_so_far():
    det = make(smoothing_windows=1)
    feed_siren(det, [0.6, 0.9, 0.7])
    assert det.active["siren"].peak_score == pytest.approx(0.9)
    assert det.active["siren"].score == pytest.approx(0.6)  # score at the start decision


def test_mean_rounding_still_reaches_the_threshold():
    # float32 0.7 is 0.699999988; (0.7 + 0.7 + 0.7) / 3 is 0.6999999999999998 in float64.
    for scores in ([row(siren=0.7)] * 3, [np.array([0.7, 0.0, 0.0], dtype=np.float64)] * 3):
        det = make(thresholds={label: 0.7 for label in LABELS})
        assert [e.type for _, e in feed(det, scores)] == ["start"]


def test_threshold_zero_is_always_on_once_enabled():
    det = make(thresholds={"siren": 0.0, "dog_bark": 0.5, "car_horn": 0.5}, enabled={"siren"})
    events = feed_siren(det, [None] * 20)
    assert [(t, e.type) for t, e in events] == [(0.5, "start")]
    (end,) = det.close(10.0)
    assert end.type == "end" and end.end_offset_s == 10.0


def test_threshold_one_needs_a_perfect_score():
    det = make(thresholds={label: 1.0 for label in LABELS}, smoothing_windows=2)
    assert feed_siren(det, [0.999, 1.0, 255 / 256]) == []
    events = feed_siren(det, [1.0, 1.0], first_offset=2.0)
    assert [(t, e.type) for t, e in events] == [(2.5, "start")]


def test_wrong_number_of_scores_is_an_error():
    det = make()
    with pytest.raises(ValueError, match="2 scores for 3 labels"):
        det.update(0.5, np.array([0.1, 0.2]))


def test_duplicate_labels_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        Detector(["a", "a"], {"a": 0.5}, {"a"})
