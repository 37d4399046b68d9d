"""`soundmon bench` runs on a short file and prints every figure (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.paths import DEMO

FIELDS = [
    "x_realtime", "cpu_s_per_audio_hour", "frontend_ms_per_hop", "inference_ms_p50", "inference_ms_p95",
    "detector_publish_ms_per_window", "peak_rss_mb", "startup_s", "macs_per_window", "macs_per_audio_second",
]  # fmt: skip
TABLE_LINES = [
    "x real time", "CPU s per audio hour", "front-end ms per hop", "inference ms per window p50",
    "inference ms per window p95", "detector + publish ms per window", "peak RSS", "first window result",
]  # fmt: skip


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor", "bench", *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_bench_prints_every_figure_and_a_verdict(tiny_bundle, tmp_path):
    pytest.importorskip("librosa", reason="the naive comparison needs librosa (train extra)")
    out = bench("--model", str(tiny_bundle), "--audio", str(DEMO), "--naive-seconds", "5",
                "--json-out", str(tmp_path / "b.json"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    for line in TABLE_LINES + ["naive librosa pipeline ms per hop", "speed-up vs naive"]:
        assert line in out.stdout, line
    assert out.stdout.count("pass") + out.stdout.count("MISS") == 3
    figures = json.loads((tmp_path / "b.json").read_text())
    for key in FIELDS + ["naive_librosa_ms_per_hop", "speedup_vs_naive", "machine", "date"]:
        assert key in figures, key
    assert figures["windows"] == 66 and figures["peak_rss_mb"] > 0  # 33 s: a window every 0.5 s hop from the first hop on


def test_soak_samples_the_daemon_and_writes_table_and_plot(tiny_bundle, tmp_path):
    out = bench("--model", str(tiny_bundle), "--audio", str(DEMO), "--soak", "0.05", "--soak-out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "soak.md").read_text()
    assert "windows_exact\": true" in text and "| audio hour | RSS MB |" in text
    assert "errors in the log: 0" in text


def test_latency_bench_lists_every_onset(tiny_bundle, tmp_path):
    """`--latency` plays recordings at real speed: here 6 s of the demo's siren, one labelled onset."""
    import soundfile as sf

    audio, sr = sf.read(DEMO, dtype="float32", frames=6 * 16000)
    rec = tmp_path / "recordings"
    rec.mkdir()
    sf.write(rec / "1.flac", audio, sr)
    (rec / "labels.csv").write_text("fsID,fold,class,classID,start,end\n1,1,siren,8,0.000,6.000\n")
    out = bench("--latency", "--model", str(tiny_bundle), "--recordings", str(rec), "--json-out", str(tmp_path / "l.json"))
    assert out.returncode == 0, out.stderr
    assert "recording  class" in out.stdout and "onset -> MQTT start" in out.stdout
    assert out.stdout.count("pass") + out.stdout.count("MISS") == 1
    figures = json.loads((tmp_path / "l.json").read_text())
    assert figures["latency_detected"].endswith("/1") and len(figures["latency_onsets"]) == 1
    assert figures["latency_onsets"][0]["class"] == "siren"
    assert figures["latency_within_budget"].endswith("/1") or figures["latency_detected"].startswith("0/")


def test_median_interval_shows_how_far_a_small_median_can_move():
    """Ten onsets answered at 0.5 s and ten at 1.0 s: the median is 0.75 s, but resampling the
    onsets puts it anywhere from 0.5 to 1.0 s; one onset gives no interval at all."""
    from monitor.bench import median_interval

    assert median_interval([0.5] * 10 + [1.0] * 10) == [0.5, 1.0]
    assert median_interval([0.7]) is None
    assert median_interval([0.3, 0.3, 0.3]) == [0.3, 0.3]
