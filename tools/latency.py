"""Latency over labelled recordings: onset -> MQTT `start` at a subscriber, in real time.

Each street recording (`../shared/data/recordings`: FLAC files named by fsID and a `labels.csv`,
see `training.evaluation.labelled_onsets`) is played at real speed through `soundmon run`, several at once,
against a private mosquitto; a subscriber notes when each detection `start` arrives. The latency
of an annotated occurrence is the arrival of the first new event of its class (decided between
its onset and its end + one hop, `training.evaluation.labelled_onsets.first_new_event`) minus the wall-clock
time of its onset. Figures only: nothing here asserts a timing.

    python -m tools.latency [--model models/urban10] [--parallel 20] [--fast-start T|off]

Needs mosquitto and a checkout (tools/ is not installed with soundmon).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from monitor.bench import (
    effective_fast_start,
    emit_figures,
    fast_start_arg,
    print_table,
    start_mosquitto,
    write_config,
)
from monitor.config import default_model_path
from training.evaluation.labelled_onsets import first_new_event, labelled_onsets

__all__ = ["latency_bench", "main", "median_interval"]

REPO = Path(__file__).resolve().parents[1]
SHARED_RECORDINGS = REPO.parent / "shared" / "data" / "recordings"

LATENCY_LABELS = {
    "latency_median_s": "onset -> MQTT start, median (s)",
    "latency_p90_s": "onset -> MQTT start, p90 (s)",
    "latency_detected": "labelled onsets detected",
    "latency_median_ci90_s": "median, 90 % bootstrap interval (s)",
    "latency_within_budget": "new events within hop + 0.3 s",
    "latency_after_start": "onsets after a recording's start",
}
"""The table's rows (`monitor.bench.print_table`)."""


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
        raise SystemExit("tools.latency: needs mosquitto (apt-get install mosquitto)")
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.latency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="bundle (default: the shipped model)")
    ap.add_argument("--recordings", type=Path, default=None,
                    help="folder of labelled recordings (default ../shared/data/recordings)")  # fmt: skip
    ap.add_argument("--hop", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fast-start", type=fast_start_arg, default=None, metavar="T|off",
                    help="detection.fast_start_threshold for the runs (default: the daemon's: the bundle's own, else 0.9)")  # fmt: skip
    ap.add_argument("--parallel", type=int, default=10, help="recordings played at once")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    from monitor.bundle import load_bundle

    model = args.model or default_model_path()
    fast_start = effective_fast_start(load_bundle(model), args.fast_start)
    recordings = args.recordings or (SHARED_RECORDINGS if SHARED_RECORDINGS.is_dir() else None)
    if recordings is None:
        raise SystemExit("tools.latency: needs the street recordings (../shared/data/recordings or --recordings)")
    with tempfile.TemporaryDirectory(prefix="soundmon-latency-") as tmp:
        print(f"latency: {len(list(recordings.glob('*.flac')))} street recordings at real speed, "
              f"{args.parallel} at a time ...", flush=True)  # fmt: skip
        fig = latency_bench(model, args.hop, args.threads, recordings, Path(tmp), args.parallel, fast_start)
        ok = fig["latency_median_s"] is not None and fig["latency_median_s"] <= fig["latency_budget_s"]
        print("  recording  class              onset s  latency s")
        for row in fig["latency_onsets"]:
            shown = "no new event" if row["latency_s"] is None else f"{row['latency_s']:.3f}"
            print(f"  {row['recording']:>9}  {row['class']:<17} {row['onset_s']:8.2f}  {shown}")
        print_table(fig, LATENCY_LABELS)
        if fig["latency_median_s"] is None:
            print("  onset -> MQTT start: no labelled onset got a new event")
        print(f"  budget: median <= hop + 0.3 s = {fig['latency_budget_s']:.2f} s: {'pass' if ok else 'MISS'}")
        emit_figures(fig, fast_start, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
