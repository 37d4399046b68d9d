"""Event times and clips through a model reload, a gap and a system clock that steps (the daemon's
`_anchor_clock`, `_handle_gap`).

In process, with the shipped model on the bundled demo (a siren 0-12 s, dog barks from 13 s): the
daemon's loop steps (`_anchor_clock`, then `_feed`) driven block by block, and a stand-in publisher
that keeps the detection payloads. The system clock stepping (NTP's first answer on a Raspberry Pi
without a real-time clock) cannot be made to happen here, so a fake `time.time` plays it, named as
such."""

from __future__ import annotations

import time
from datetime import datetime
from types import SimpleNamespace

import numpy as np
import soundfile as sf

from monitor.clips import ClipRecorder
from monitor.config import load_config
from monitor.daemon import Daemon
from monitor.runner import open_model
from tests.daemon_helpers import StandIn, write_config
from tests.paths import DEMO, need_shipped_model

T0 = 1_800_000_000.0
BLOCK = 800  # 0.05 s, the default audio block


def _daemon(tmp_path, source: str, threads: int = 1) -> tuple[Daemon, StandIn]:
    model = need_shipped_model()
    path = write_config(tmp_path / "c.yaml", model={"path": str(model), "threads": threads})
    bundle, runner = open_model(model, threads, 0.5)
    publisher = StandIn()
    d = Daemon(load_config(path), bundle, runner, source=source, config_path=path, publisher=publisher,
               notifier=StandIn())  # fmt: skip
    d.source = SimpleNamespace(gap_count=0, last_gap_samples=0, health="ok", stats={})
    return d, publisher


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_model_reload_goes_on_counting_the_stream(tmp_path):
    """A reload that rebuilds the pipeline (here: another thread count) keeps offsets and times
    counting from the stream's start: the dog barks after it are where the demo has them."""
    d, publisher = _daemon(tmp_path, source=str(DEMO))
    audio, sr = sf.read(DEMO, dtype="float32")
    for k in range(0, 12 * sr + sr // 2, BLOCK):
        d._anchor_clock(len(audio[k : k + BLOCK]))
        d._feed(audio[k : k + BLOCK])
    start_wall = d._stream_start_wall
    write_config(d.config_path, model={"path": str(need_shipped_model()), "threads": 2})
    d.reload()
    assert d.pipeline.offset_s >= 12.0  # a new pipeline, the same stream
    for k in range(12 * sr + sr // 2, len(audio), BLOCK):
        d._anchor_clock(len(audio[k : k + BLOCK]))
        d._feed(audio[k : k + BLOCK])
    barks = [p for p in publisher.payloads if p["type"] == "start" and p["label"] == "dog_bark"]
    assert barks, publisher.payloads
    for p in barks:
        assert 12.5 <= p["stream_offset_s"] <= 24.5, p  # (the reload came at 12.5 s: not 0.5 s again)
        assert abs(_epoch(p["time"]) - (start_wall + p["stream_offset_s"])) < 0.002


def test_a_microphones_events_follow_the_system_clock_when_it_steps(tmp_path, monkeypatch):
    """A Raspberry Pi without a real-time clock steps its clock when NTP first answers, often after
    the service started. A microphone's events are stamped by the clock in force when their audio
    arrived (the anchor moves at every read), and an event open across the step ends with the start
    time its START said. (Fake clock: the real one cannot be stepped in a test.)"""
    d, publisher = _daemon(tmp_path, source="mic")
    audio, sr = sf.read(DEMO, dtype="float32")
    clock = {"now": T0}
    monkeypatch.setattr(time, "time", lambda: clock["now"])
    step_at, step = 6.0, 3600.0  # an hour forward, 6 s into the siren
    for k in range(0, len(audio), BLOCK):
        block = audio[k : k + BLOCK]
        clock["now"] += len(block) / sr  # the block arrives in real time
        if k <= step_at * sr < k + BLOCK:
            clock["now"] += step
        d._anchor_clock(len(block))
        d._feed(block)
    d._emit(d.pipeline.finish()[1])
    starts = {p["id"]: p for p in publisher.payloads if p["type"] == "start"}
    ends = {p["id"]: p for p in publisher.payloads if p["type"] == "end"}
    siren = next(p for p in starts.values() if p["label"] == "siren")
    assert siren["stream_offset_s"] < step_at
    assert abs(_epoch(siren["time"]) - (T0 + siren["stream_offset_s"])) < 0.002  # the clock before the step
    assert ends[siren["id"]]["time"] == siren["time"]  # its END keeps it
    assert abs(_epoch(ends[siren["id"]]["end_time"]) - (T0 + step + ends[siren["id"]]["end_offset_s"])) < 0.06
    later = [p for p in starts.values() if p["stream_offset_s"] > step_at + 1.0]
    assert later and {p["label"] for p in later} >= {"dog_bark"}
    for p in later:  # stamped by the clock after the step
        assert abs(_epoch(p["time"]) - (T0 + step + p["stream_offset_s"])) < 0.06, p
    assert np.isfinite(d.pipeline.offset_s)


def test_detection_clips_count_a_gap_as_the_pipeline_does(tmp_path):
    """After the source lost audio, an event's clip is cut from its own audio: the clips' timeline
    moves on by the gap as the pipeline's offsets do (it used to lag by every gap so far)."""
    d, _ = _daemon(tmp_path, source="mic")
    d.clips = ClipRecorder(tmp_path / "clips", 16000, pre_seconds=1.0, post_seconds=1.0, max_bytes=10**7)
    audio, sr = sf.read(DEMO, dtype="float32")

    def play(a: np.ndarray) -> None:
        for k in range(0, len(a), BLOCK):
            d._handle_gap()
            d.clips.add_audio(a[k : k + BLOCK])
            d._feed(a[k : k + BLOCK])

    play(audio[: 5 * sr])
    d.source.gap_count, d.source.last_gap_samples = 1, 30 * sr  # the microphone was gone for 30 s
    play(audio[5 * sr :])
    received = d.pipeline.offset_s + d._held_samples / sr
    assert received == 33.0 + 30.0
    assert d.clips._total == received * sr  # one timeline
