"""`soundmon bench` runs on a short file and prints every figure (no timing is asserted); so do
the research harnesses built on it, `tools/soak.py` and `tools/latency.py`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.paths import DEMO, REPO, need_shipped_model

FIELDS = [
    "x_realtime", "cpu_s_per_audio_hour", "frontend_ms_per_hop", "inference_ms_p50", "inference_ms_p95",
    "detector_publish_ms_per_window", "peak_rss_mb", "startup_s", "macs_per_window", "macs_per_hop",
    "macs_per_audio_second", "runner",
]  # fmt: skip
TABLE_LINES = [
    "x real time", "CPU s per audio hour", "front-end ms per hop", "inference ms per window p50",
    "inference ms per window p95", "detector + publish ms per window", "peak RSS", "first window result",
]  # fmt: skip


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor", "bench", *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def tool(name: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m tools.<name>` from the checkout (tools/ is not installed)."""
    return subprocess.run([sys.executable, "-m", f"tools.{name}", *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)  # fmt: skip


@pytest.mark.integration  # runs the daemon as a child (soundmon bench)
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
    assert figures["runner"].startswith("window model")
    assert figures["fast_start_threshold"] is None  # no start model in this bundle: off by default


@pytest.mark.integration  # runs the daemon as a child (soundmon bench)
def test_bench_runs_a_streaming_bundle_one_hop_at_a_time(tiny_stream_bundle, tmp_path):
    """A bundle with a streaming model: the daemon steps it once per hop after the first window."""
    out = bench("--model", str(tiny_stream_bundle), "--audio", str(DEMO), "--naive-seconds", "0",
                "--json-out", str(tmp_path / "b.json"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    figures = json.loads((tmp_path / "b.json").read_text())
    assert figures["runner"] == "streaming model: 65 hops stepped, 1 windows rebuilt"
    assert figures["macs_per_hop"] < figures["macs_per_window"] / 4
    assert "streaming model: 65 hops stepped" in out.stdout


@pytest.mark.integration  # runs the daemon as a child (soundmon bench)
@pytest.mark.parametrize("flag, threshold", [([], 0.75), (["--fast-start", "0.9"], 0.9), (["--fast-start", "off"], None)])
def test_bench_runs_fast_start_as_the_daemon_does_and_counts_the_start_models_work(flag, threshold, tmp_path):
    """With the shipped bundle the daemon's default is fast start at the bundle's own threshold
    (0.75, in its JSON): the start model runs at
    each window and half a hop after it (its streaming model steps a quarter second), and its MACs
    join the per-hop ones. `--fast-start T` sets the threshold, `--fast-start off` turns it off."""
    model = need_shipped_model()
    out = bench("--model", str(model), "--audio", str(DEMO), "--naive-seconds", "0", *flag,
                "--json-out", str(tmp_path / "b.json"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    figures = json.loads((tmp_path / "b.json").read_text())
    main = json.loads(model.with_suffix(".json").read_text())["stream"]["macs_per_hop"]
    start = json.loads((model.parent / "urban10_start.json").read_text())["stream"]["macs_per_hop"]
    assert figures["fast_start_threshold"] == threshold
    if threshold is None:
        assert "fast start" not in out.stdout and figures["macs_per_hop"] == main
    else:
        assert f"fast start {threshold:g}" in out.stdout
        assert figures["macs_per_hop"] == main + 2 * start
        assert figures["macs_per_audio_second"] == 2 * (main + 2 * start)


def test_bench_refuses_a_bad_fast_start_value():
    out = bench("--fast-start", "1.5", "--naive-seconds", "0")
    assert out.returncode == 2 and "a threshold in (0, 1] or off, got 1.5" in out.stderr


@pytest.mark.integration  # runs the daemon as a child (soundmon bench)
def test_soak_samples_the_daemon_and_writes_table_and_plot(tiny_bundle, tmp_path):
    out = tool("soak", "--model", str(tiny_bundle), "--audio", str(DEMO), "--hours", "0.05", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "soak.md").read_text()
    assert "windows_exact\": true" in text and "| audio hour | RSS MB |" in text
    assert "errors in the log: 0" in text


@pytest.mark.integration  # runs the daemon as a child (soundmon bench), then at real speed
def test_bench_live_adds_the_cpu_of_a_run_at_real_speed(tiny_stream_bundle, tmp_path):
    """`--live S`: after the fast-pace run, the first S seconds at real speed, the daemon's CPU per
    audio second live (several times the fast-pace figure on a real machine; not asserted)."""
    out = bench("--model", str(tiny_stream_bundle), "--audio", str(DEMO), "--naive-seconds", "0",
                "--live", "3", "--json-out", str(tmp_path / "b.json"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "live (real speed): CPU ms per audio s" in out.stdout
    figures = json.loads((tmp_path / "b.json").read_text())
    assert figures["live_audio_s"] == 3.0 and figures["live_cpu_ms_per_audio_second"] > 0
    assert bench("--model", str(tiny_stream_bundle), "--live", "-1").returncode == 2


@pytest.mark.integration  # runs the daemon as a child (soundmon bench)
def test_latency_bench_lists_every_onset(tiny_bundle, tmp_path):
    """tools.latency plays recordings at real speed: here 6 s of the demo's siren, one labelled onset."""
    import soundfile as sf

    audio, sr = sf.read(DEMO, dtype="float32", frames=6 * 16000)
    rec = tmp_path / "recordings"
    rec.mkdir()
    sf.write(rec / "1.flac", audio, sr)
    (rec / "labels.csv").write_text("fsID,fold,class,classID,start,end\n1,1,siren,8,0.000,6.000\n")
    out = tool("latency", "--model", str(tiny_bundle), "--recordings", str(rec), "--json-out", str(tmp_path / "l.json"))
    assert out.returncode == 0, out.stderr
    assert "recording  class" in out.stdout and "onset -> MQTT start" in out.stdout
    assert out.stdout.count("pass") + out.stdout.count("MISS") == 1
    figures = json.loads((tmp_path / "l.json").read_text())
    assert figures["latency_detected"].endswith("/1") and len(figures["latency_onsets"]) == 1
    assert figures["latency_onsets"][0]["class"] == "siren"
    assert figures["latency_within_budget"].endswith("/1") or figures["latency_detected"].startswith("0/")
    assert figures["latency_after_start"] == "0 answered"  # its one onset opens the recording


def test_median_interval_shows_how_far_a_small_median_can_move():
    """Ten onsets answered at 0.5 s and ten at 1.0 s: the median is 0.75 s, but resampling the
    onsets puts it anywhere from 0.5 to 1.0 s; one onset gives no interval at all."""
    from tools.latency import median_interval

    assert median_interval([0.5] * 10 + [1.0] * 10) == [0.5, 1.0]
    assert median_interval([0.7]) is None
    assert median_interval([0.3, 0.3, 0.3]) == [0.3, 0.3]


def test_labelled_onsets_go_back_to_where_the_sound_began(tmp_path):
    """A labels.csv row is a run of kept UrbanSound8K slices: a row that begins at slice 3 began
    6 s earlier, and two rows of one occurrence (slices 3-4 and 7-8 kept) are one onset."""
    from training.evaluation.labelled_onsets import labelled_onsets

    (tmp_path / "labels.csv").write_text(
        "fsID,fold,class,classID,start,end\n"
        "7,1,dog_bark,3,8.000,14.000\n"
        "7,1,dog_bark,3,16.000,22.000\n"
        "7,1,siren,8,30.000,34.000\n"
    )
    assert [(o["onset_s"], o["end_s"]) for o in labelled_onsets(tmp_path)] == [
        (8.0, 14.0), (16.0, 22.0), (30.0, 34.0)]  # fmt: skip  (no slices.csv: the rows as they are)

    (tmp_path / "slices.csv").write_text(
        "slice_file_name,fsID,fold,class,classID,occurrenceID,sliceID,start,end\n"
        "7-3-0-3.flac,7,1,dog_bark,3,0,3,8.0,12.0\n"
        "7-3-0-4.flac,7,1,dog_bark,3,0,4,10.0,14.0\n"
        "7-3-0-7.flac,7,1,dog_bark,3,0,7,16.0,20.0\n"
        "7-3-0-8.flac,7,1,dog_bark,3,0,8,18.0,22.0\n"
        "7-8-1-0.flac,7,1,siren,8,1,0,30.0,34.0\n"
    )
    onsets = labelled_onsets(tmp_path)
    assert [(o["class"], o["onset_s"], o["end_s"], o["row_start_s"]) for o in onsets] == [
        ("dog_bark", 2.0, 22.0, 8.0),  # slice 3 at 8 s: the bark began at 8 - 2 x 3 s
        ("siren", 30.0, 34.0, 30.0),  # slice 0: the row's start is the onset
    ]


def test_naive_comparison_runs_a_bundle_whose_frames_are_shorter_than_the_fft():
    """YAMNet's front-end frames 400 samples into a 512-point FFT: librosa's frames span n_fft, so
    the naive pipeline gets the extra samples and builds the bundle's 96 frames (it failed with 95)."""
    pytest.importorskip("librosa", reason="the naive comparison needs librosa (train extra)")
    from monitor.bench import naive_ms_per_hop
    model = REPO / "models" / "urban10_yamnet"
    if not model.with_suffix(".tflite").is_file():
        pytest.skip("needs the shipped bundle models/urban10_yamnet")
    ms = naive_ms_per_hop(model, 1, 2.0, None)
    assert ms is not None and ms > 0


YAMNET_EXPORT = REPO.parent / "shared" / "models" / "yamnet.tflite"  # the float export, beside the checkout


@pytest.mark.integration  # runs the daemon as a child (soundmon bench)
def test_bench_times_a_waveform_model_alone_and_prints_the_pipeline_as_a_ratio_of_it(tmp_path):
    """`--compare-tflite` times YAMNet's export over the first `--compare-seconds` of the audio the
    daemon streamed (a 15600-sample window every 0.48 s), before and after the daemon's run, and
    divides the pipeline's CPU per audio second (1000 / x real time) by the two passes' mean."""
    if not YAMNET_EXPORT.is_file():
        pytest.skip("needs ../shared/models/yamnet.tflite")
    model = need_shipped_model()
    out = bench("--model", str(model), "--audio", str(DEMO), "--naive-seconds", "0", "--compare-tflite",
                str(YAMNET_EXPORT), "--compare-seconds", "10", "--json-out", str(tmp_path / "b.json"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    for line in TABLE_LINES + ["yamnet inference CPU ms per audio s", "pipeline CPU / yamnet inference"]:
        assert line in out.stdout, line
    assert "over the first 10 s of the same audio, before and after the run (a 15600-sample window every 0.48 s" \
        in out.stdout
    assert out.stdout.count("pass") + out.stdout.count("MISS") == 4
    figures = json.loads((tmp_path / "b.json").read_text())
    assert figures["compare_windows"] == 19 and figures["compare_hop_s"] == 0.48  # (160000 - 15600) // 7680 + 1
    before, after = figures["compare_before_after_ms_per_audio_second"]
    assert figures["compare_inference_ms_per_audio_second"] == pytest.approx((before + after) / 2, rel=1e-3)
    ratio = figures["pipeline_cpu_ms_per_audio_second"] / figures["compare_inference_ms_per_audio_second"]
    assert figures["pipeline_vs_compare"] == pytest.approx(ratio, rel=1e-2)
    assert figures["pipeline_cpu_ms_per_audio_second"] == pytest.approx(1000 / figures["x_realtime"], rel=1e-3)
    for key in FIELDS:  # every figure of a run without the comparison is still there
        assert key in figures, key


@pytest.mark.parametrize("name, content, message", [
    ("missing.tflite", None, "no such file"),
    ("corrupt.tflite", b"not a flatbuffer" * 64, "cannot load TFLite model"),
    ("urban10.tflite", "shipped", "not a raw-waveform model"),
])  # fmt: skip
def test_bench_refuses_a_missing_corrupt_or_non_waveform_compare_model_in_one_line(name, content, message, tmp_path):
    """A bad `--compare-tflite` file stops bench before the daemon runs: one line, exit 2."""
    model = need_shipped_model()
    path = tmp_path / name
    if content == "shipped":
        path = model.with_suffix(".tflite")  # a log-mel model: its input is not a waveform
    elif content is not None:
        path.write_bytes(content)
    out = bench("--audio", str(DEMO), "--naive-seconds", "0", "--compare-tflite", str(path))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"soundmon bench: --compare-tflite {path}: {message}"), lines
    assert "streaming" not in out.stdout


def test_the_compare_ratio_passes_only_below_one():
    from monitor.bench import verdict

    assert verdict("pipeline_vs_compare", 0.99) == "pass (< 1)"
    assert verdict("pipeline_vs_compare", 1.0) == "MISS (< 1)"


def test_the_pcm_copy_the_bench_streams_holds_the_files_own_samples(tmp_path):
    """bench streams a WAV copy of the audio in place of a microphone's PCM: for a 16-bit FLAC
    the same 16-bit samples (so the daemon's results do not change), for a lossy file float32."""
    import numpy as np
    import soundfile as sf

    from monitor.bench import pcm_copy

    copy = pcm_copy(DEMO, tmp_path / "demo.wav")
    src, dst = sf.info(DEMO), sf.info(copy)
    assert (dst.format, dst.subtype, dst.samplerate, dst.channels) == ("WAV", src.subtype, src.samplerate, src.channels)
    assert np.array_equal(sf.read(copy, dtype="int32")[0], sf.read(DEMO, dtype="int32")[0])
    ogg = tmp_path / "stereo.ogg"
    sf.write(ogg, np.full((4000, 2), 0.25, dtype=np.float32), 22050, format="OGG", subtype="VORBIS")
    copy = pcm_copy(ogg, tmp_path / "stereo.wav")
    assert (sf.info(copy).subtype, sf.info(copy).samplerate, sf.info(copy).channels) == ("FLOAT", 22050, 2)
    assert np.allclose(sf.read(copy, dtype="float32")[0], sf.read(ogg, dtype="float32")[0], atol=1e-6)


@pytest.mark.integration  # runs the daemon as a child (soundmon bench's run_child)
def test_the_peak_rss_is_the_daemons_own_not_its_parents(tiny_bundle, tmp_path):
    """Linux starts a child's wait4 peak RSS at its parent's: a bench process larger than the
    daemon (holding YAMNet for --compare-tflite) would be reported as the daemon's peak. The
    figure is the daemon's own VmHWM, from its report."""
    import numpy as np

    from monitor.bench import run_child, write_config
    from monitor.run_report import own_peak_rss_mb

    ballast = np.ones(300 * 2**20 // 8)  # 300 MB in this (the parent) process, every page touched
    assert own_peak_rss_mb() > 300
    write_config(tmp_path / "c.yaml", tmp_path / "state", tiny_bundle, 0, 0.5, 1)
    run = run_child(DEMO, tmp_path / "c.yaml", tmp_path / "r.json")
    assert 0 < run["peak_rss_mb"] < 200, run["peak_rss_mb"]
    del ballast


@pytest.mark.integration  # runs the daemon as a child, at real speed
@pytest.mark.parametrize("source", ["file", "mic"])
def test_realtime_cpu_reads_a_live_daemons_cpu_per_audio_second(tiny_stream_bundle, tmp_path, source):
    """tools.realtime_cpu: the daemon at real speed, its CPU per audio second and per thread (a few
    seconds of the demo here; `mic` plays it through a private PulseAudio into PortAudio)."""
    if source == "mic":
        import shutil

        if shutil.which("pulseaudio") is None:
            pytest.skip("needs pulseaudio (make system-deps)")
    out = tool("realtime_cpu", "--model", str(tiny_stream_bundle), "--source", source, "--recordings",
               str(tmp_path / "none"), "--settle", "3", "--seconds", "2", "--repeat", "1",
               "--json-out", str(tmp_path / "r.json"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "ms CPU per audio s" in out.stdout and "threads (ms/s, wakes/s)" in out.stdout
    figures = json.loads((tmp_path / "r.json").read_text())
    assert figures["source"] == source and len(figures["ms_cpu_per_audio_s"]) == 1
    assert figures["runs"][0]["threads"] and figures["median_ms_cpu_per_audio_s"] >= 0
