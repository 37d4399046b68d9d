"""monitor.source.Source: every source the daemon opens has what the daemon's loop reads."""

from __future__ import annotations

from monitor.config import AudioConfig
from monitor.daemon import RepeatedFileSource
from monitor.file_source import FileSource
from monitor.mic_source import MicSource
from monitor.source import Source
from tests.paths import DEMO

MEMBERS = ("start", "stop", "read", "finished", "health", "gap_count", "last_gap_samples", "stats")


def test_the_protocol_names_what_the_daemon_reads() -> None:
    assert all(hasattr(Source, name) for name in MEMBERS)


def test_file_mic_and_repeated_sources_are_sources_with_the_defaults() -> None:
    files = [FileSource(DEMO, 16000, pace="fast"), RepeatedFileSource(lambda: FileSource(DEMO, 16000), 2)]
    mic = MicSource(AudioConfig(), 16000)  # not started: no device is opened
    for src in (*files, mic):
        assert isinstance(src, Source), type(src).__name__
    for src in files:
        assert (src.finished, src.health, src.gap_count, src.last_gap_samples) == (False, "ok", 0, 0)
        assert isinstance(src.stats, dict)
        src.stop()
    assert (mic.finished, mic.gap_count, mic.last_gap_samples) == (False, 0, 0)
    assert isinstance(mic.stats, dict)
