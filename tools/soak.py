"""Soak: hours of looped audio through `soundmon run` against a real broker, the daemon sampled.

The recording (`--audio`, or 30 min of `--recordings` looped, default the street recordings in
`../shared/data/recordings`) is played `--repeat` times as one stream in fast pace against a
private mosquitto; every 0.5 s the daemon's RSS, threads and open file descriptors are read from
/proc and its spool depth from its `<base>/stats`. Writes `soak.md` (a table per audio hour and
the verdicts: RSS growth, exact window count, errors in the log) and `soak.png` (with
matplotlib) to `--out` (default `docs/`).

    python -m tools.soak --hours 24 [--model models/urban10] [--fast-start T|off]

Needs mosquitto and a checkout (tools/ is not installed with soundmon).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import soundfile as sf

from monitor.bench import (
    cpu_model,
    effective_fast_start,
    emit_figures,
    fast_start_arg,
    long_recording,
    start_mosquitto,
    write_config,
)
from monitor.config import default_model_path

__all__ = ["main", "soak"]

REPO = Path(__file__).resolve().parents[1]
SHARED_RECORDINGS = REPO.parent / "shared" / "data" / "recordings"


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
    base = audio or long_recording(30.0, recordings)
    repeat = max(1, int(round(hours * 60 / (sf.info(base).duration / 60))))
    broker, port = start_mosquitto(workdir)
    if broker is None:
        raise SystemExit("tools.soak: needs mosquitto (apt-get install mosquitto)")
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
           "--pace", "fast", "--config", str(config), "--report", str(report)]  # fmt: skip
    samples: list[dict[str, float]] = []
    early: list[dict[str, float]] = []
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
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
    machine = f"{os.cpu_count()} cores, {cpu_model()}"
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
        f"# Soak run, {stamp}\n\nMachine: {machine}. Command: `python -m tools.soak --hours {result['requested_hours']:g}"
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, required=True, help="hours of audio to stream")
    ap.add_argument("--model", type=Path, default=None, help="bundle (default: the shipped model)")
    ap.add_argument("--audio", type=Path, default=None, help="recording to loop (default: build one)")
    ap.add_argument("--recordings", type=Path, default=None,
                    help="folder of recordings to build it from (default ../shared/data/recordings, "
                         "else the bundled demo recording)")  # fmt: skip
    ap.add_argument("--hop", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fast-start", type=fast_start_arg, default=None, metavar="T|off",
                    help="detection.fast_start_threshold for the run (default: the daemon's default)")  # fmt: skip
    ap.add_argument("--out", type=Path, default=REPO / "docs", help="where soak.md and soak.png go")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    from monitor.bundle import load_bundle

    model = args.model or default_model_path()
    fast_start = effective_fast_start(load_bundle(model), args.fast_start)
    recordings = args.recordings or (SHARED_RECORDINGS if SHARED_RECORDINGS.is_dir() else None)
    with tempfile.TemporaryDirectory(prefix="soundmon-soak-") as tmp:
        print(f"soak: {args.hours:g} h of audio in fast pace against a local broker ...", flush=True)
        fig = soak(model, args.hours, args.hop, args.threads, recordings, Path(tmp), args.out, args.audio,
                   fast_start)  # fmt: skip
        for key, value in fig.items():
            print(f"  {key:<22} {value}")
        print(f"  written: {args.out / 'soak.md'}, {args.out / 'soak.png'}")
        emit_figures(fig, fast_start, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
