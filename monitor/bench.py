"""`soundmon bench`: speed, memory and start-up of the real daemon, printed against the budgets.

It runs `soundmon run --source LONG.flac --pace fast` as a child process (the exact daemon:
file source, incremental front-end, windows, int8 model, detector, MQTT publisher and spool
against a real local broker when `mosquitto` is installed), reads the child's own timing
report and its peak RSS from the kernel (wait4), and, when librosa is installed, times a naive
pipeline that recomputes the whole 4 s log-mel with librosa at every hop, for comparison.
`--latency` plays the street recordings at real speed and measures onset -> MQTT `start` at a
subscriber. Figures only: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from monitor.config import DetectionConfig, default_model_path
from monitor.fast_start import effective_fast_start, fast_start_arg, start_macs_per_hop

__all__ = ["bench_main", "first_new_event", "labelled_onsets", "median_interval"]

REPO = Path(__file__).resolve().parent.parent
SHARED_RECORDINGS = REPO.parent / "shared" / "data" / "recordings"
DEMO = REPO / "demo" / "street_demo.flac"

BUDGETS = {
    "x_realtime": (">=", 300.0),
    "peak_rss_mb": ("<=", 100.0),
    "startup_s": ("<=", 1.5),
}


# -- inputs ------------------------------------------------------------------------------------


def recordings_dir(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    return SHARED_RECORDINGS if SHARED_RECORDINGS.is_dir() else None


def build_long_recording(minutes: float, out: Path, recordings: Path | None) -> Path:
    """Concatenate the street recordings (looped) to at least `minutes` of 16 kHz audio."""
    if out.is_file() and sf.info(out).duration >= minutes * 60 - 1:
        return out
    sources = sorted(recordings.glob("*.flac")) if recordings else [DEMO]
    if not sources:
        raise SystemExit(f"soundmon bench: no recordings in {recordings}")
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
    """Run the daemon on `audio`; return its report plus wall time, peak RSS and start-up."""
    env = dict(os.environ, SOUNDMON_BENCH_REPORT=str(report))
    cmd = [sys.executable, "-m", "monitor", "run", "--source", str(audio), "--pace", pace, "--config", str(config)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
    data["peak_rss_mb"] = usage.ru_maxrss / 1024.0  # kB on Linux
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


# -- report ------------------------------------------------------------------------------------


def verdict(name: str, value: float) -> str:
    if name not in BUDGETS:
        return ""
    op, limit = BUDGETS[name]
    ok = value >= limit if op == ">=" else value <= limit
    return f"{'pass' if ok else 'MISS'} ({op} {limit:g})"


def figures_from(run: dict[str, Any], bundle_meta: dict[str, Any], hop: float,
                 stream_macs_per_hop: int | None = None, start_macs_per_hop: int = 0) -> dict[str, Any]:  # fmt: skip
    """The table's figures from a child's timing report; `start_macs_per_hop`: the start model's
    work when fast start was on (added to the per-hop and per-second MACs)."""
    windows = max(run["windows"], 1)
    steady_audio = run["audio_s"] - run["first_window_audio_s"]
    steady_cpu = run["cpu_s_at_end"] - run["cpu_s_at_first_window"]
    xrt = steady_audio / steady_cpu if steady_cpu > 0 else float("inf")
    macs = _macs_per_window(bundle_meta)
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


def print_table(fig: dict[str, Any]) -> None:
    labels = {
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
        "latency_median_s": "onset -> MQTT start, median (s)",
        "latency_p90_s": "onset -> MQTT start, p90 (s)",
        "latency_detected": "labelled onsets detected",
        "latency_median_ci90_s": "median, 90 % bootstrap interval (s)",
        "latency_within_budget": "new events within hop + 0.3 s",
        "latency_after_start": "onsets after a recording's start",
    }
    width = max(len(v) for v in labels.values())
    for key, value in fig.items():
        if key in labels and value is not None:
            shown = f"{value:,.4g}" if isinstance(value, float) else str(value)
            if isinstance(value, str) and len(shown) > 12:  # a sentence, not a figure
                print(f"  {labels[key]:<{width}}  {shown}")
                continue
            print(f"  {labels[key]:<{width}}  {shown:>12}  {verdict(key, value) if isinstance(value, (int, float)) else ''}")


# -- latency -----------------------------------------------------------------------------------


SLICE_STEP_S = 2.0
"""UrbanSound8K cut an annotated occurrence into 4 s slices every 2 s from its start (slice k at
start + 2k; the recordings' README shows it on 565 independent copies)."""


def labelled_onsets(rec_dir: Path) -> list[dict[str, Any]]:
    """The annotated sound occurrences of a recordings folder: fsID, class, onset, end.

    A row of labels.csv is a run of *kept* UrbanSound8K slices, and UrbanSound8K kept only some
    slices of an occurrence: a row whose first slice is slice k > 0 starts 2k s after the sound
    did (the recording 72539 barks at 6.8 s; its row starts at 8.8 s), and two rows can be parts
    of one occurrence. With slices.csv beside labels.csv each row is taken back to its
    occurrence's start (first slice's located start - 2 s x sliceID, not before 0) and rows of
    one occurrence are merged; `row_start_s` keeps the first row's start. Without slices.csv
    the rows are the occurrences."""
    with open(Path(rec_dir) / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    slices_csv = Path(rec_dir) / "slices.csv"
    slices: list[dict[str, str]] = []
    if slices_csv.is_file():
        with open(slices_csv, newline="") as f:
            slices = list(csv.DictReader(f))
    merged: dict[tuple[str, str, float], dict[str, Any]] = {}
    for r in rows:
        start, end = float(r["start"]), float(r["end"])
        inside = [
            s for s in slices
            if s["fsID"] == r["fsID"] and s["class"] == r["class"]
            and float(s["start"]) >= start - 0.02 and float(s["end"]) <= end + 0.02
        ]  # fmt: skip
        onset = min((float(s["start"]) - SLICE_STEP_S * int(s["sliceID"]) for s in inside), default=start)
        onset = round(max(0.0, min(onset, start)), 3)
        key = (r["fsID"], r["class"], onset)
        if key in merged:
            merged[key]["end_s"] = max(merged[key]["end_s"], end)
        else:
            merged[key] = {"recording": r["fsID"], "class": r["class"], "onset_s": onset, "end_s": end,
                           "row_start_s": start}  # fmt: skip
    return sorted(merged.values(), key=lambda o: (o["recording"], o["onset_s"], o["class"]))


def first_new_event(start_offsets: list[float], onset: float, end: float, hop: float) -> float | None:
    """The stream offset of the first event start that answers a labelled occurrence: decided
    between its onset and its end (+ one hop); None if every start of the class is outside (an
    event still running from earlier does not count). `training.streaming_eval` counts the same."""
    new = [s for s in start_offsets if onset <= s <= end + hop]
    return min(new) if new else None


def median_interval(values: list[float], level: float = 0.9, resamples: int = 2000) -> list[float] | None:
    """Bootstrap interval of the median (onsets resampled, fixed seed): with ~20 onsets the
    median moves by a window (0.5 s) when one or two onsets change, and this shows by how much."""
    if len(values) < 2:
        return None
    rng = np.random.default_rng(0)
    meds = np.median(rng.choice(np.asarray(values), size=(resamples, len(values))), axis=1)
    lo, hi = np.quantile(meds, [(1 - level) / 2, (1 + level) / 2])
    return [round(float(lo), 3), round(float(hi), 3)]


def latency_bench(model: Path, hop: float, threads: int, recordings: Path, workdir: Path,
                  parallel: int, fast_start: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Play each street recording at real speed; onset of each labelled occurrence -> `start` at a subscriber."""
    import paho.mqtt.client as mqtt

    broker, port = start_mosquitto(workdir)
    if broker is None:
        raise SystemExit("soundmon bench --latency: needs mosquitto (apt-get install mosquitto)")
    received: list[tuple[float, dict]] = []
    lock = threading.Lock()

    def on_message(_c, _u, msg):
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            return
        with lock:
            received.append((time.time(), payload))

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-latency")
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe("soundmon/+/detection", qos=1)
    sub.loop_start()
    labels = labelled_onsets(recordings)
    fsids = sorted({o["recording"] for o in labels})
    try:
        for i in range(0, len(fsids), parallel):
            procs = []
            for fsid in fsids[i : i + parallel]:
                cfg = workdir / f"lat-{fsid}.yaml"
                write_config(cfg, workdir / f"state-{fsid}", model, port, hop, threads, node_id=f"rec{fsid}",
                             fast_start=fast_start)  # fmt: skip
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "monitor", "run", "--source", str(recordings / f"{fsid}.flac"),
                     "--pace", "realtime", "--config", str(cfg)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
            for proc in procs:
                proc.wait()
        time.sleep(1.0)
    finally:
        sub.loop_stop()
        broker.terminate()
    latencies: list[float] = []
    onsets: list[dict[str, Any]] = []
    total = 0
    for fsid in fsids:
        starts = [(rx, p) for rx, p in received if p.get("node") == f"rec{fsid}" and p.get("type") == "start"]
        for occ in (o for o in labels if o["recording"] == fsid):
            onset, end = occ["onset_s"], occ["end_s"]
            total += 1
            same_class = [(rx, p) for rx, p in starts if p["label"] == occ["class"]]
            first = first_new_event([p["stream_offset_s"] for _, p in same_class], onset, end, hop)
            row = {"recording": fsid, "class": occ["class"], "onset_s": onset, "latency_s": None}
            if occ["row_start_s"] != onset:
                row["labels_csv_start_s"] = occ["row_start_s"]
            onsets.append(row)
            if first is None:
                continue
            rx, p = next((rx, p) for rx, p in same_class if p["stream_offset_s"] == first)
            stream_start = _parse_iso(p["time"]) - p["stream_offset_s"]
            latencies.append(rx - (stream_start + onset))
            row["latency_s"] = round(latencies[-1], 3)
    budget = hop + 0.3
    # Onsets at a recording's first instant are answered by the warm start's first window (0.5 s
    # in) when the model knows the sound from that much of it; the later ones are the usual case.
    later = [r["latency_s"] for r in onsets if r["latency_s"] is not None and r["onset_s"] > 0]
    return {
        "latency_median_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_after_start": (
            f"{len(later)} answered, median {statistics.median(later):.3f} s, "
            f"{sum(x <= budget for x in later)} within hop + 0.3 s" if later else "0 answered"
        ),
        "latency_median_ci90_s": median_interval(latencies),
        "latency_within_budget": f"{sum(x <= budget for x in latencies)}/{len(latencies)}",
        "latency_p90_s": round(float(np.percentile(latencies, 90)), 3) if latencies else None,
        "latency_detected": f"{len(latencies)}/{total}",
        "latency_budget_s": budget,
        "latency_onsets": onsets,
    }


def _parse_iso(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- soak --------------------------------------------------------------------------------------


def _proc_sample(pid: int) -> dict[str, float] | None:
    """RSS (MB), threads and open file descriptors of a live process, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:  # exiting (zombie)
        return None
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024.0,
        "threads": int(fields["Threads"]),
        "fds": fds,
    }


def soak(model: Path, hours: float, hop: float, threads: int, recordings: Path | None, workdir: Path,
         out_dir: Path, audio: Path | None = None, fast_start: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Stream `hours` of looped recordings in fast pace against a real broker; sample the daemon."""
    base = audio or build_long_recording(30.0, REPO / ".cache" / "bench_30min.flac", recordings)
    repeat = max(1, int(round(hours * 60 / (sf.info(base).duration / 60))))
    broker, port = start_mosquitto(workdir)
    if broker is None:
        raise SystemExit("soundmon bench --soak: needs mosquitto (apt-get install mosquitto)")
    config = workdir / "soak.yaml"
    write_config(config, workdir / "state", model, port, hop, threads, node_id="soak", fast_start=fast_start)
    cfg = json.loads(config.read_text())
    cfg["mqtt"]["stats_interval"] = 0.5
    config.write_text(json.dumps(cfg))
    try:
        return _soak_run(model, hours, hop, threads, workdir, out_dir, base, repeat, port, config)
    finally:
        broker.terminate()


def _soak_run(model: Path, hours: float, hop: float, threads: int, workdir: Path, out_dir: Path,
              base: Path, repeat: int, port: int, config: Path) -> dict[str, Any]:  # fmt: skip
    """The soak proper (the caller owns the broker); see `soak`."""
    import paho.mqtt.client as mqtt

    from monitor.pipeline import expected_windows
    from monitor.windows import hop_frames_for

    latest: dict[str, Any] = {}
    detections = [0]

    def on_message(_c, _u, msg):
        if msg.topic.endswith("/stats"):
            latest.update(json.loads(msg.payload))
        elif msg.topic.endswith("/detection"):
            detections[0] += 1

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-soak")
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe([("soundmon/soak/stats", 0), ("soundmon/soak/detection", 1)])
    sub.loop_start()
    report = workdir / "report.json"
    log_path = workdir / "daemon.log"
    cmd = [sys.executable, "-m", "monitor", "run", "--source", str(base), "--repeat", str(repeat),
           "--pace", "fast", "--config", str(config)]  # fmt: skip
    samples: list[dict[str, float]] = []
    early: list[dict[str, float]] = []
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log,
                                env=dict(os.environ, SOUNDMON_BENCH_REPORT=str(report)))  # fmt: skip
        while proc.poll() is None:
            sample = _proc_sample(proc.pid)
            if sample is not None:
                sample["audio_h"] = latest.get("audio_seconds", 0.0) / 3600.0
                sample["spool_depth"] = latest.get("spool_depth", 0)
                sample["wall_s"] = time.monotonic() - t0
                (samples if latest else early).append(sample)
            time.sleep(0.5)
    # Samples from before the first stats message (the process still starting) count only when
    # the run ended before one came (a very short soak).
    samples = samples or early
    time.sleep(1.0)
    sub.loop_stop()
    run = json.loads(report.read_text())
    total_samples = int(round(sf.info(base).frames)) * repeat
    p = load_frontend_params(model)
    expected = expected_windows(total_samples, p, p.frames_for(4.0), hop_frames_for(hop, p), warm_start=True)
    errors = [line for line in log_path.read_text().splitlines() if "ERROR" in line or "Traceback" in line]
    audio_h = run["audio_s"] / 3600.0
    first = [x["rss_mb"] for x in samples if x["audio_h"] <= 1.0] or [samples[0]["rss_mb"]]
    last = [x["rss_mb"] for x in samples if x["audio_h"] >= audio_h - 1.0] or [samples[-1]["rss_mb"]]
    result = {
        "requested_hours": hours,
        "audio_hours": round(audio_h, 2),
        "wall_minutes": round((time.monotonic() - t0) / 60, 1),
        "windows": run["windows"],
        "expected_windows": expected,
        "windows_exact": run["windows"] == expected,
        "rss_first_hour_mb": round(statistics.median(first), 1),
        "rss_last_hour_mb": round(statistics.median(last), 1),
        "rss_growth_mb": round(statistics.median(last) - statistics.median(first), 2),
        "max_fds": max(x["fds"] for x in samples),
        "max_threads": max(x["threads"] for x in samples),
        "max_spool_depth": max(x["spool_depth"] for x in samples),
        "detection_messages": detections[0],
        "log_errors": len(errors),
        "x_realtime": round(run["audio_s"] / max(run["cpu_s_at_end"], 1e-9), 1),
        "fast_start_threshold": json.loads(config.read_text())["detection"].get("fast_start_threshold"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_soak_outputs(result, samples, out_dir)
    return result


def load_frontend_params(model: Path):
    from monitor.bundle import load_bundle

    return load_bundle(model).frontend


def _write_soak_outputs(result: dict[str, Any], samples: list[dict[str, float]], out_dir: Path) -> None:
    """docs/soak.md (table per audio hour) and docs/soak.png (when matplotlib is installed)."""
    stamp = time.strftime("%Y-%m-%d")
    machine = f"{os.cpu_count()} cores, {_cpu_model()}"
    rows = ["| audio hour | RSS MB | open fds | threads | spool depth |", "|---|---|---|---|---|"]
    for hour in range(int(result["audio_hours"]) + 1):
        sel = [x for x in samples if hour <= x["audio_h"] < hour + 1]
        if sel:
            rows.append(f"| {hour} | {statistics.median(x['rss_mb'] for x in sel):.1f} | "
                        f"{max(x['fds'] for x in sel)} | {max(x['threads'] for x in sel)} | "
                        f"{max(x['spool_depth'] for x in sel)} |")  # fmt: skip
    verdicts = [
        f"- RSS growth first -> last audio hour: {result['rss_growth_mb']} MB "
        f"({'pass' if result['rss_growth_mb'] <= 5 else 'MISS'}, budget <= 5 MB)",
        f"- windows: {result['windows']} of {result['expected_windows']} expected "
        f"({'exact' if result['windows_exact'] else 'MISMATCH'})",
        f"- errors in the log: {result['log_errors']}",
    ]
    text = (
        f"# Soak run, {stamp}\n\nMachine: {machine}. Command: `soundmon bench --soak {result['requested_hours']:g}"
        f" --fast-start {'off' if result.get('fast_start_threshold') is None else format(result['fast_start_threshold'], 'g')}` "
        f"({result['audio_hours']} h of looped street recordings through `soundmon run --pace fast` "
        f"against a local mosquitto, sampled from /proc every 0.5 s; {result['wall_minutes']} min wall).\n\n"
        + "\n".join(verdicts) + "\n\n" + "\n".join(rows) + "\n\n"
        + "```json\n" + json.dumps(result, indent=2) + "\n```\n\n![soak](soak.png)\n"
    )
    (out_dir / "soak.md").write_text(text)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no soak.png)")
        return
    fig, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    hours = [x["audio_h"] for x in samples]
    for ax, key, label in zip(axes, ("rss_mb", "fds", "threads", "spool_depth"),
                              ("RSS (MB)", "open fds", "threads", "spool depth"), strict=True):  # fmt: skip
        ax.plot(hours, [x[key] for x in samples], lw=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("audio hours streamed")
    fig.suptitle(f"soundmon soak, {stamp}, {machine}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "soak.png", dpi=110)


# -- entry point -------------------------------------------------------------------------------


def bench_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="soundmon bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="bundle (default: the shipped model)")
    ap.add_argument("--audio", type=Path, default=None, help="recording to stream (default: build one)")
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the built recording")
    ap.add_argument("--recordings", default=None, help="folder of street recordings (default ../shared/data/recordings)")
    ap.add_argument("--hop", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fast-start", type=fast_start_arg, default=None, metavar="T|off",
                    help="detection.fast_start_threshold for the run (default: the daemon's default, "
                         f"{DetectionConfig().fast_start_threshold:g} with a bundle that has a start model)")
    ap.add_argument("--no-mqtt", action="store_true", help="run without a broker (publisher disabled)")
    ap.add_argument("--naive-seconds", type=float, default=60.0, help="audio for the naive comparison (0 = skip)")
    ap.add_argument("--latency", action="store_true", help="measure onset -> MQTT start in real time")
    ap.add_argument("--parallel", type=int, default=10, help="--latency: recordings played at once")
    ap.add_argument("--soak", type=float, default=0.0, metavar="HOURS",
                    help="soak: stream HOURS of looped audio against a real broker, sample RSS/fds/threads/spool")
    ap.add_argument("--soak-out", type=Path, default=REPO / "docs", help="where soak.md and soak.png go")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    from monitor.bundle import load_bundle

    model = args.model or default_model_path()
    bundle = load_bundle(model)
    fast_start = effective_fast_start(bundle, args.fast_start)
    recordings = recordings_dir(args.recordings)
    with tempfile.TemporaryDirectory(prefix="soundmon-bench-") as tmp:
        work = Path(tmp)
        if args.soak > 0:
            print(f"soak: {args.soak:g} h of audio in fast pace against a local broker ...", flush=True)
            fig = soak(model, args.soak, args.hop, args.threads, recordings, work, args.soak_out, args.audio,
                       fast_start)  # fmt: skip
            for key, value in fig.items():
                print(f"  {key:<22} {value}")
            print(f"  written: {args.soak_out / 'soak.md'}, {args.soak_out / 'soak.png'}")
        elif args.latency:
            if recordings is None:
                raise SystemExit("soundmon bench --latency: needs the street recordings (../shared/data/recordings)")
            print(f"latency: {len(list(recordings.glob('*.flac')))} street recordings at real speed, "
                  f"{args.parallel} at a time ...", flush=True)  # fmt: skip
            fig = latency_bench(model, args.hop, args.threads, recordings, work, args.parallel, fast_start)
            ok = fig["latency_median_s"] is not None and fig["latency_median_s"] <= fig["latency_budget_s"]
            print("  recording  class              onset s  latency s")
            for row in fig["latency_onsets"]:
                shown = "no new event" if row["latency_s"] is None else f"{row['latency_s']:.3f}"
                print(f"  {row['recording']:>9}  {row['class']:<17} {row['onset_s']:8.2f}  {shown}")
            print_table(fig)
            if fig["latency_median_s"] is None:
                print("  onset -> MQTT start: no labelled onset got a new event")
            print(f"  budget: median <= hop + 0.3 s = {fig['latency_budget_s']:.2f} s: {'pass' if ok else 'MISS'}")
        else:
            audio = args.audio or build_long_recording(
                args.minutes, REPO / ".cache" / f"bench_{args.minutes:g}min.flac", recordings)
            broker, port = (None, 0) if args.no_mqtt else start_mosquitto(work)
            config = work / "bench.yaml"
            write_config(config, work / "state", model, port, args.hop, args.threads, fast_start=fast_start)
            print(f"streaming {sf.info(audio).duration / 60:.1f} min of audio through `soundmon run --pace fast` "
                  f"(model {bundle.name}, {args.threads} thread(s), hop {args.hop} s, "
                  f"mqtt {'on' if port else 'off'}"
                  f"{'' if fast_start is None else f', fast start {fast_start:g}'}) ...", flush=True)  # fmt: skip
            try:
                run = run_child(audio, config, work / "report.json")
            finally:
                if broker is not None:
                    broker.terminate()
            fig = figures_from(run, bundle.meta, args.hop, bundle.stream_meta.get("macs_per_hop"),
                               start_macs_per_hop(bundle, args.hop) if fast_start is not None else 0)  # fmt: skip
            if args.naive_seconds > 0:
                naive = naive_ms_per_hop(model, args.threads, args.naive_seconds, recordings)
                if naive is not None:
                    ours = 1000 * args.hop / fig["x_realtime"]
                    fig["naive_librosa_ms_per_hop"] = round(naive, 3)
                    fig["speedup_vs_naive"] = round(naive / ours, 1)
            print_table(fig)
        fig["fast_start_threshold"] = fast_start
        fig["machine"] = f"{os.cpu_count()} cores, {_cpu_model()}"
        fig["date"] = time.strftime("%Y-%m-%d")
        print(json.dumps(fig))
        if args.json_out:
            args.json_out.write_text(json.dumps(fig, indent=2) + "\n")
    return 0


def _macs_per_window(bundle_meta: dict[str, Any]) -> int | None:
    """A bundle's multiply-accumulates per whole window, from its JSON (top level or `model`)."""
    return bundle_meta.get("macs_per_window") or (bundle_meta.get("model") or {}).get("macs_per_window")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"
