"""`soundmon bench`: speed, memory and start-up of the real daemon, printed against the budgets.

It runs `soundmon run --source LONG.wav --pace fast --report R.json` as a child process (the
exact daemon: file source, incremental front-end, windows, int8 model, detector, MQTT publisher
and spool against a real local broker when `mosquitto` is installed), reads the child's own
timing report (`monitor.run_report`, which also gives its own peak RSS), and, when
librosa is installed, times a naive pipeline that recomputes the whole 4 s log-mel with librosa
at every hop, for comparison. LONG.flac is `--audio`, or `--minutes` of the `--recordings`
(default: the bundled demo recording) looped. The daemon is measured as it runs on a microphone,
which delivers PCM: the bench first decodes LONG.flac once into a temporary WAV of the same
samples (same rate, channels and sample format, so the same results) and streams that, so FLAC
decoding, which no microphone needs, is not counted in the pipeline's cost; `--encoded` streams
the file as it is instead (the daemon then decodes it). With `--compare-tflite MODEL` it also times that
raw-waveform model's inference alone (YAMNet's export, say) over the first `--compare-seconds` of
the same audio, once before the daemon's run and once after it (so a change of the shared
machine's load during the run weighs on both sides alike), and prints the pipeline's CPU as a
ratio of the two passes' mean (`monitor.bench_compare`).
Figures only: nothing here asserts a timing.
The research harnesses built on these pieces (latency over labelled recordings, the soak) are
in `tools/`, which is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from monitor.bench_compare import (
    COMPARE_HOP_S,
    open_waveform_model,
    read_compare_audio,
)
from monitor.bundle import macs_per_window
from monitor.config import DetectionConfig, default_model_path
from monitor.fast_start import effective_fast_start, fast_start_arg, start_macs_per_hop

__all__ = [
    "bench_main",
    "compare_figures",
    "cpu_model",
    "emit_figures",
    "long_recording",
    "pcm_copy",
    "print_table",
    "run_child",
    "start_mosquitto",
    "write_config",
]

DEMO = Path(__file__).resolve().parent.parent / "demo" / "street_demo.flac"  # in a checkout

BUDGETS = {
    "x_realtime": (">=", 300.0),
    "peak_rss_mb": ("<=", 100.0),
    "startup_s": ("<=", 1.5),
    "pipeline_vs_compare": ("<", 1.0),  # the whole pipeline cheaper than the --compare-tflite model alone
}


# -- inputs ------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where built recordings are kept between runs: `$XDG_CACHE_HOME/soundmon` (~/.cache/soundmon)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "soundmon"


def long_recording(minutes: float, recordings: Path | None) -> Path:
    """`minutes` of the `recordings` folder's FLAC files (default: the bundled demo recording)
    looped, built once into the cache directory."""
    name = recordings.resolve().name if recordings else DEMO.stem
    return build_long_recording(minutes, cache_dir() / f"bench_{minutes:g}min_{name}.flac", recordings)


def build_long_recording(minutes: float, out: Path, recordings: Path | None) -> Path:
    """Concatenate the recordings (looped) to at least `minutes` of 16 kHz audio."""
    if out.is_file() and sf.info(out).duration >= minutes * 60 - 1:
        return out
    sources = sorted(recordings.glob("*.flac")) if recordings else [DEMO]
    if not sources:
        raise SystemExit(f"soundmon bench: no recordings in {recordings}")
    if not sources[0].is_file():
        raise SystemExit(f"soundmon bench: no {DEMO.name} in this install: pass --audio FILE or --recordings DIR")
    need = int(minutes * 60 * 16000)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with sf.SoundFile(out, "w", samplerate=16000, channels=1, subtype="PCM_16", format="FLAC") as dst:
        while written < need:
            for src in sources:
                audio, sr = sf.read(src, dtype="int16")
                if sr != 16000 or audio.ndim != 1:
                    raise SystemExit(f"soundmon bench: {src} is not 16 kHz mono")
                dst.write(audio)
                written += len(audio)
                if written >= need:
                    break
    return out


STREAMED_TEXT = {
    False: "  (the daemon reads PCM, as from a microphone: a WAV copy of the file decoded before the run; "
           "--encoded counts decoding the file too)",
    True: "  (the daemon reads the file as it is: decoding it counts in the pipeline's CPU)",
}  # fmt: skip
PCM_SUBTYPES = ("PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")


def pcm_copy(audio: Path, out: Path) -> Path:
    """`audio` decoded once into the WAV (or, over 4 GB, RF64) `out`: the same samples, rate and
    channels, in the file's own sample format when it is PCM (16-bit for a 16-bit FLAC, so the
    copy is exact), else float32. Streamed by the bench in place of a microphone's PCM."""
    info = sf.info(audio)
    subtype = info.subtype if info.subtype in PCM_SUBTYPES else "FLOAT"
    big = info.frames * info.channels * 8 > 4e9 - 1e6
    with sf.SoundFile(audio) as src, sf.SoundFile(out, "w", samplerate=info.samplerate, channels=info.channels,
                                                 subtype=subtype, format="RF64" if big else "WAV") as dst:  # fmt: skip
        dtype = "int32" if subtype.startswith("PCM") else "float64"  # lossless for every PCM width
        for block in src.blocks(blocksize=1 << 16, dtype=dtype, always_2d=True):
            dst.write(block)
    return out


# -- a throwaway broker -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen | None, int]:
    """A private mosquitto on a free loopback port, or (None, 0) when it is not installed."""
    exe = next((p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.path.exists(p)), None)
    if exe is None:
        return None, 0
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.02)
    proc.kill()
    return None, 0


# -- the daemon run ----------------------------------------------------------------------------


def write_config(path: Path, state_dir: Path, model: Path, port: int, hop: float, threads: int,
                 node_id: str = "bench", fast_start: float | None = None) -> None:  # fmt: skip
    mqtt = {"enabled": bool(port), "host": "127.0.0.1", "port": port or 1883, "node_id": node_id,
            "stats_interval": 3600}  # fmt: skip
    cfg = {
        "model": {"path": str(model), "threads": threads},
        "detection": {"hop_seconds": hop, "level_interval": 5, "fast_start_threshold": fast_start},
        "mqtt": mqtt,
        "storage": {"state_dir": str(state_dir)},
        "logging": {"level": "WARNING"},
    }
    path.write_text(json.dumps(cfg))  # JSON is YAML


def run_child(audio: Path, config: Path, report: Path, pace: str = "fast") -> dict[str, Any]:
    """Run the daemon on `audio`; return its report (`soundmon run --report`) plus wall time, peak
    RSS (the child's own VmHWM when its report has it, else wait4's) and start-up."""
    cmd = [sys.executable, "-m", "monitor", "run", "--source", str(audio), "--pace", pace, "--config", str(config),
           "--report", str(report)]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    reader.join(5)
    if proc.returncode != 0:
        err = b"".join(stderr_chunks).decode(errors="replace").strip().splitlines()
        raise SystemExit(f"soundmon bench: the daemon failed ({proc.returncode}): {err[-1] if err else ''}")
    data = json.loads(report.read_text())
    data["wall_s"] = wall
    # The child's own peak (`own_peak_rss_mb`); wait4's counts the parent's peak at fork too.
    data["peak_rss_mb"] = data.get("own_peak_rss_mb") or usage.ru_maxrss / 1024.0  # (kB on Linux)
    data["child_cpu_s"] = usage.ru_utime + usage.ru_stime
    data["startup_s"] = data["first_window_monotonic"] - t0
    return data


def naive_ms_per_hop(model: Path, threads: int, seconds: float, recordings: Path | None) -> float | None:
    """Recompute the whole 4 s log-mel with librosa at every hop (+ inference): ms per hop."""
    try:
        import librosa
    except ImportError:
        return None
    from monitor.runner import open_model

    bundle, runner = open_model(model, threads)
    p = bundle.frontend
    src = sorted(recordings.glob("*.flac"))[0] if recordings else DEMO
    audio, _ = sf.read(src, dtype="float32")
    audio = np.tile(audio, int(np.ceil((seconds + 4) * 16000 / len(audio))))
    # librosa's frames span n_fft samples; a front-end with a shorter frame_length (YAMNet's 400
    # of 512) gets the extra samples so the window has the bundle's number of frames.
    win = (bundle.window_frames - 1) * p.hop_length + p.n_fft
    hop = int(0.5 * p.sample_rate)
    librosa.feature.melspectrogram(y=audio[:win], sr=p.sample_rate)  # numba compile outside the timing
    starts = range(0, int(seconds * p.sample_rate), hop)
    t0 = time.process_time()
    for s in starts:
        mel = librosa.feature.melspectrogram(
            y=audio[s : s + win], sr=p.sample_rate, n_fft=p.n_fft, win_length=p.win_length,
            hop_length=p.hop_length, center=False, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax,
            power=p.power, htk=p.mel_scale == "htk",
        )  # fmt: skip
        if p.log_scale == "ln":
            logmel = np.log(mel + p.log_offset).T
        else:
            logmel = librosa.power_to_db(mel, ref=p.ref, amin=p.amin, top_db=None).T
        runner.predict(logmel)
    return 1000.0 * (time.process_time() - t0) / len(starts)


def steady_audio_and_cpu(run: dict[str, Any]) -> tuple[float, float]:
    """A child's audio seconds and CPU seconds from its first window result to its end (its
    timing report): the steady state, start-up left out."""
    return run["audio_s"] - run["first_window_audio_s"], run["cpu_s_at_end"] - run["cpu_s_at_first_window"]


def live_run(streamed: Path, config: Path, work: Path, seconds: float) -> dict[str, Any]:
    """The daemon at `--pace realtime` over the first `seconds` of `streamed` (a PCM copy): its
    steady CPU per audio second (all threads, from its first window on), as the live figures."""
    info = sf.info(streamed)
    frames = min(info.frames, int(seconds * info.samplerate))
    audio, rate = sf.read(streamed, frames=frames, dtype="int16" if info.subtype == "PCM_16" else "float32")
    clip = work / "live.wav"
    sf.write(clip, audio, rate, subtype=info.subtype)
    print(f"streaming the first {frames / rate:.0f} s at real speed (`soundmon run --pace realtime`) ...", flush=True)
    run = run_child(clip, config, work / "live_report.json", pace="realtime")
    audio_s, cpu_s = steady_audio_and_cpu(run)
    ms = 1000 * cpu_s / audio_s if audio_s > 0 else float("nan")
    return {"live_audio_s": round(frames / rate, 1), "live_cpu_ms_per_audio_second": round(ms, 3),
            "live_core_percent": round(ms / 10, 3)}  # fmt: skip


# -- report ------------------------------------------------------------------------------------


def verdict(name: str, value: float) -> str:
    if name not in BUDGETS:
        return ""
    op, limit = BUDGETS[name]
    ok = {">=": value >= limit, "<=": value <= limit, "<": value < limit}[op]
    return f"{'pass' if ok else 'MISS'} ({op} {limit:g})"


def figures_from(run: dict[str, Any], bundle_meta: dict[str, Any], hop: float,
                 stream_macs_per_hop: int | None = None, start_macs_per_hop: int = 0) -> dict[str, Any]:  # fmt: skip
    """The table's figures from a child's timing report; `start_macs_per_hop`: the start model's
    work when fast start was on (added to the per-hop and per-second MACs)."""
    windows = max(run["windows"], 1)
    steady_audio, steady_cpu = steady_audio_and_cpu(run)
    xrt = steady_audio / steady_cpu if steady_cpu > 0 else float("inf")
    macs = macs_per_window(bundle_meta)
    streaming = run.get("runner") == "streaming" and bool(stream_macs_per_hop)
    per_hop = ((stream_macs_per_hop if streaming else macs) or 0) + start_macs_per_hop
    return {
        "audio_minutes": round(run["audio_s"] / 60, 2),
        "windows": run["windows"],
        "x_realtime": round(xrt, 1),
        "cpu_s_per_audio_hour": round(3600 / xrt, 2),
        "core_percent": round(100 / xrt, 3),
        "frontend_ms_per_hop": round(1000 * run["frontend_s"] / windows, 4),
        "inference_ms_p50": round(run["inference_ms_p50"], 4),
        "inference_ms_p95": round(run["inference_ms_p95"], 4),
        "detector_publish_ms_per_window": round(1000 * (run["detector_s"] + run["publish_s"]) / windows, 4),
        "peak_rss_mb": round(run["peak_rss_mb"], 1),
        "startup_s": round(run["startup_s"], 3),
        "runner": _runner_text(run),
        "macs_per_window": macs,
        "macs_per_hop": per_hop if macs else None,
        "macs_per_audio_second": round(per_hop / hop) if macs else None,
        "events": run["events"],
    }


def _runner_text(run: dict[str, Any]) -> str:
    if run.get("runner") != "streaming":
        return "window model, every window whole"
    return f"streaming model: {run['stream_steps']} hops stepped, {run['stream_rebuilds']} windows rebuilt"


BENCH_LABELS = {
    "audio_minutes": "audio streamed (min)",
    "windows": "windows",
    "x_realtime": "audio s per CPU s (x real time)",
    "cpu_s_per_audio_hour": "CPU s per audio hour",
    "core_percent": "share of one core (%)",
    "frontend_ms_per_hop": "front-end ms per hop",
    "inference_ms_p50": "inference ms per window p50",
    "inference_ms_p95": "inference ms per window p95",
    "detector_publish_ms_per_window": "detector + publish ms per window",
    "peak_rss_mb": "peak RSS of soundmon run (MB)",
    "startup_s": "start -> first window result (s)",
    "runner": "model runner",
    "macs_per_window": "model MACs per window (whole)",
    "macs_per_hop": "model MACs per hop (as run)",
    "macs_per_audio_second": "model MACs per audio second",
    "naive_librosa_ms_per_hop": "naive librosa pipeline ms per hop",
    "speedup_vs_naive": "speed-up vs naive (x)",
    "events": "detection events",
    "live_cpu_ms_per_audio_second": "live (real speed): CPU ms per audio s",
    "live_core_percent": "live (real speed): share of one core (%)",
}
"""The table's rows: figure key -> label, printed in the order of the figures."""
LABEL_WIDTH = 35  # the label column, as wide as tools.latency's longest label: one layout for both


def print_table(fig: dict[str, Any], labels: dict[str, str] = BENCH_LABELS) -> None:
    """The figures in `labels` (key -> label) as a table, each budgeted one with its verdict."""
    width = max([LABEL_WIDTH, *map(len, labels.values())])
    for key, value in fig.items():
        if key in labels and value is not None:
            shown = f"{value:,.4g}" if isinstance(value, float) else str(value)
            if isinstance(value, str) and len(shown) > 12:  # a sentence, not a figure
                print(f"  {labels[key]:<{width}}  {shown}")
                continue
            print(f"  {labels[key]:<{width}}  {shown:>12}  {verdict(key, value) if isinstance(value, (int, float)) else ''}")


# -- entry point -------------------------------------------------------------------------------


def bench_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="soundmon bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="bundle (default: the shipped model)")
    ap.add_argument("--audio", type=Path, default=None, help="recording to stream (default: build one)")
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the built recording")
    ap.add_argument("--recordings", type=Path, default=None,
                    help="folder of 16 kHz mono FLAC recordings to loop (default: the bundled demo recording)")
    ap.add_argument("--hop", type=float, default=None,
                    help="detection.hop_seconds for the run (default: the daemon's: the bundle's own, else "
                         f"{DetectionConfig().hop_seconds:g})")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fast-start", type=fast_start_arg, default=None, metavar="T|off",
                    help="detection.fast_start_threshold for the run (default: the daemon's: the bundle's own, "
                         f"else {DetectionConfig().fast_start_threshold:g} with a bundle that has a start model)")
    ap.add_argument("--no-mqtt", action="store_true", help="run without a broker (publisher disabled)")
    ap.add_argument("--encoded", action="store_true",
                    help="stream the audio file as it is, so the daemon's CPU includes decoding it (FLAC), "
                         "which a microphone does not need (default: a PCM WAV copy of it, decoded once "
                         "before the run)")
    ap.add_argument("--naive-seconds", type=float, default=60.0, help="audio for the naive comparison (0 = skip)")
    ap.add_argument("--compare-tflite", type=Path, default=None, metavar="MODEL",
                    help="also time this raw-waveform TFLite model's inference alone (float32 input [1, N], "
                         "e.g. YAMNet's export) over the first --compare-seconds of the same audio, one window "
                         "every --compare-hop s, and print the pipeline's CPU per audio second as a ratio of it")
    ap.add_argument("--compare-seconds", type=float, default=300.0,
                    help="audio for the --compare-tflite timing: the first S seconds of the streamed "
                         "file, timed before and after the daemon's run (default 300)")
    ap.add_argument("--compare-hop", type=float, default=COMPARE_HOP_S,
                    help=f"seconds between the --compare-tflite model's windows (default {COMPARE_HOP_S:g}, "
                         "YAMNet's own patch hop)")
    ap.add_argument("--live", type=float, default=0.0, metavar="SECONDS",
                    help="also run the daemon at real speed over the first SECONDS of the audio and print "
                         "its CPU per audio second live (`make bench`: 60): a live daemon wakes from cold "
                         "caches for each result and costs several times the fast-pace figure (0 = skip)")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    if args.compare_seconds <= 0 or args.compare_hop <= 0:
        ap.error("--compare-seconds and --compare-hop must be > 0")
    if not 0 <= args.live < 1e6:
        ap.error("--live must be a number of seconds >= 0")

    from monitor.bundle import load_bundle

    model = args.model or default_model_path()
    bundle = load_bundle(model)
    fast_start = effective_fast_start(bundle, args.fast_start)
    detection = DetectionConfig() if args.hop is None else DetectionConfig(hop_seconds=args.hop)
    detection.apply_bundle_defaults(bundle.detection_defaults)
    hop = detection.hop_seconds
    compare = open_waveform_model(args.compare_tflite, args.threads) if args.compare_tflite else None
    with tempfile.TemporaryDirectory(prefix="soundmon-bench-") as tmp:
        work = Path(tmp)
        audio = args.audio or long_recording(args.minutes, args.recordings)
        compare_audio = read_compare_audio(audio, args.compare_seconds) if compare else None
        streamed = audio if args.encoded else pcm_copy(audio, work / "audio.wav")
        broker, port = (None, 0) if args.no_mqtt else start_mosquitto(work)
        config = work / "bench.yaml"
        write_config(config, work / "state", model, port, hop, args.threads, fast_start=fast_start)
        print(f"streaming {sf.info(audio).duration / 60:.1f} min of audio through `soundmon run --pace fast` "
              f"(model {bundle.name}, {args.threads} thread(s), hop {hop} s, "
              f"mqtt {'on' if port else 'off'}"
              f"{'' if fast_start is None else f', fast start {fast_start:g}'}) ...", flush=True)  # fmt: skip
        print(STREAMED_TEXT[args.encoded], flush=True)
        passes = []  # the --compare-tflite timing, before and after the run
        if compare is not None:
            print(f"timing {compare.path.name}'s inference alone over the first {len(compare_audio) / 16000:.0f} s "
                  f"of the same audio, before and after the run (a {compare.window_samples}-sample window every "
                  f"{args.compare_hop:g} s, {args.threads} thread(s)) ...", flush=True)  # fmt: skip
            passes.append(compare.cpu_ms_per_audio_second(compare_audio, args.compare_hop))
        try:
            run = run_child(streamed, config, work / "report.json")
            live = live_run(streamed, config, work, args.live) if args.live > 0 else None
        finally:
            if broker is not None:
                broker.terminate()
        fig = figures_from(run, bundle.meta, hop, bundle.stream_meta.get("macs_per_hop"),
                           start_macs_per_hop(bundle, hop) if fast_start is not None else 0)  # fmt: skip
        if live is not None:
            fig.update(live)
        if args.naive_seconds > 0:
            naive = naive_ms_per_hop(model, args.threads, args.naive_seconds, args.recordings)
            if naive is not None:
                ours = 1000 * hop / fig["x_realtime"]
                fig["naive_librosa_ms_per_hop"] = round(naive, 3)
                fig["speedup_vs_naive"] = round(naive / ours, 1)
        labels = BENCH_LABELS
        if compare is not None:
            passes.append(compare.cpu_ms_per_audio_second(compare_audio, args.compare_hop))
            fig.update(compare_figures(compare.path, passes, args.compare_hop, fig["x_realtime"]))
            labels = {**BENCH_LABELS, **compare_labels(compare.path)}
        print_table(fig, labels)
        fig["streamed"] = "encoded file" if args.encoded else "pcm wav copy"
        emit_figures(fig, fast_start, args.json_out)
    return 0


def compare_figures(path: Path, passes: list[tuple[float, int]], hop: float, x_realtime: float) -> dict[str, Any]:
    """The `--compare-tflite` figures: the model's inference CPU per audio second, the mean of its
    timing passes (`WaveformModel.cpu_ms_per_audio_second`'s (ms, windows), each over the same
    audio), and the pipeline's (1000 / x real time, the child's steady state) as a ratio of it."""
    model_ms = sum(ms for ms, _ in passes) / len(passes)
    windows = passes[0][1]
    pipeline_ms = 1000.0 / x_realtime
    return {
        "compare_tflite": str(path),
        "compare_audio_s": round(windows * hop, 2),
        "compare_hop_s": hop,
        "compare_windows": windows,
        "compare_before_after_ms_per_audio_second": [round(ms, 4) for ms, _ in passes],
        "pipeline_cpu_ms_per_audio_second": round(pipeline_ms, 4),
        "compare_inference_ms_per_audio_second": round(model_ms, 4),
        "pipeline_vs_compare": round(pipeline_ms / model_ms, 3) if model_ms > 0 else None,
    }


def compare_labels(path: Path) -> dict[str, str]:
    """Table labels of the `--compare-tflite` rows, named after the model file."""
    return {
        "compare_inference_ms_per_audio_second": f"{path.stem} inference CPU ms per audio s",
        "pipeline_vs_compare": f"pipeline CPU / {path.stem} inference",
    }


def emit_figures(fig: dict[str, Any], fast_start: float | None, json_out: Path | None) -> None:
    """Stamp `fig` with the fast-start threshold, the machine and the date, print it as one JSON
    line and, with `json_out`, write it there too."""
    fig["fast_start_threshold"] = fast_start
    fig["machine"] = f"{os.cpu_count()} cores, {cpu_model()}"
    fig["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(fig))
    if json_out:
        json_out.write_text(json.dumps(fig, indent=2) + "\n")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (for the figures' `machine`)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"
