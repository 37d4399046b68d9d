"""CPU of `soundmon run` in real time: what the daemon costs on a live input, per audio second.

`soundmon bench` streams a file in fast pace: the pipeline's own cost, with warm caches and no
waiting. A live daemon instead sleeps between audio callbacks and wakes for each one, and every
wake starts from cold caches, so per audio second it costs several times more. This harness runs
the daemon as it runs for a user, against a private mosquitto, and reads its CPU from /proc:

- `--source mic` (default): the real input path without a sound card. A private PulseAudio with
  a null sink (`tests.pulse.PulseSink`, as the tests use) plays the recording; the daemon captures
  its monitor through PortAudio's ALSA "pulse" device at that device's own rate (44.1 kHz here,
  resampled to 16 kHz, as a USB microphone at 48 kHz would be). `--device NAME` measures a real
  microphone instead (nothing is played; it hears what is there).
- `--source file`: `soundmon run --source FILE --pace realtime` (no PortAudio, no resampling).

The figure is the process's CPU (all threads) over `--seconds` of steady state, after `--settle`
seconds of start-up, divided by the wall-clock seconds (= audio seconds), with each thread's
share and wake-ups (voluntary context switches) per second. Figures only; nothing is asserted.

    python -m tools.realtime_cpu [--seconds 60] [--source mic|file] [--repeat 2] [--json-out F]

Needs mosquitto, PulseAudio and a checkout (tools/ is not installed with soundmon).
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

from monitor.bench import cpu_model, long_recording, pcm_copy, start_mosquitto, write_config
from monitor.config import default_model_path

TICK = os.sysconf("SC_CLK_TCK")


def thread_times(pid: int) -> dict[str, tuple[float, int]]:
    """CPU seconds (user + system) and voluntary context switches of each thread of `pid`."""
    out: dict[str, tuple[float, int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:  # the thread ended between listing and reading
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        switches = int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
        out[tid] = ((int(fields[11]) + int(fields[12])) / TICK, switches)
    return out


def measure(cmd: list[str], env: dict[str, str], settle: float, seconds: float) -> dict[str, Any]:
    """Start `cmd`, wait `settle` s, then read its threads' CPU over `seconds` s; stop it."""
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(settle)
        if child.poll() is not None:
            err = child.stderr.read().decode(errors="replace").strip().splitlines() if child.stderr else []
            raise SystemExit(f"realtime_cpu: the daemon exited early: {err[-1] if err else child.returncode}")
        before, t0 = thread_times(child.pid), time.monotonic()
        time.sleep(seconds)
        after, wall = thread_times(child.pid), time.monotonic() - t0
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
    threads = sorted(
        ((after[t][0] - before.get(t, (0.0, 0))[0], after[t][1] - before.get(t, (0.0, 0))[1]) for t in after),
        reverse=True,
    )
    cpu = sum(c for c, _ in threads)
    return {
        "ms_cpu_per_audio_s": round(1000 * cpu / wall, 2),
        "threads": [{"ms_per_s": round(1000 * c / wall, 2), "wakes_per_s": round(w / wall, 1)} for c, w in threads],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=default_model_path())
    ap.add_argument("--source", choices=("mic", "file"), default="mic")
    ap.add_argument("--device", help="a real input device (mic source): measure it, play nothing")
    ap.add_argument("--recordings", type=Path, default=Path("../shared/data/recordings"))
    ap.add_argument("--seconds", type=float, default=60.0, help="steady-state seconds measured per run")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds of start-up left out")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    recordings = args.recordings if args.recordings.is_dir() else None
    with tempfile.TemporaryDirectory(prefix="soundmon-rtcpu-") as tmp:
        work = Path(tmp)
        broker, port = start_mosquitto(work)
        if broker is None:
            raise SystemExit("realtime_cpu: mosquitto is not installed (make system-deps)")
        audio = long_recording((args.settle + args.seconds) / 60 + 0.5, recordings)
        sink = None
        try:
            config = work / "config.json"
            write_config(config, work / "state", args.model, port, 0.5, 1)
            cfg = json.loads(config.read_text())
            cfg["detection"].pop("fast_start_threshold")  # the model's own default, as a user has it
            env = dict(os.environ)
            if args.source == "mic":
                cfg["audio"] = {"device": args.device or "pulse"}
                if args.device is None:
                    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
                    from tests.pulse import PulseSink

                    sink = PulseSink()
                    sink.start_server()
                    sink.activate()
                    sink.warm_up()
                    env.update(sink.env)
            config.write_text(json.dumps(cfg))
            if args.source == "mic":
                cmd = [sys.executable, "-m", "monitor", "run", "--source", "mic", "--config", str(config)]
            else:  # PCM, as a microphone delivers it (decoding FLAC would count too)
                cmd = [sys.executable, "-m", "monitor", "run", "--source", str(pcm_copy(audio, work / "audio.wav")),
                       "--pace", "realtime",
                       "--config", str(config)]  # fmt: skip
            played = None  # what the null sink plays at each run (read once)
            if sink is not None:
                played = sf.read(str(audio), dtype="float32", frames=int((args.settle + args.seconds + 5) * 16000))
            runs = []
            for i in range(args.repeat):
                player = None if played is None else sink.play_array(*played)
                try:
                    run = measure(cmd, env, args.settle, args.seconds)
                finally:
                    if player is not None:
                        player.kill()
                runs.append(run)
                print(f"run {i + 1}: {run['ms_cpu_per_audio_s']:.2f} ms CPU per audio s "
                      f"({run['ms_cpu_per_audio_s'] / 10:.2f} % of one core); threads (ms/s, wakes/s): "
                      + ", ".join(f"{t['ms_per_s']:g}/{t['wakes_per_s']:g}" for t in run["threads"] if t["ms_per_s"] > 0),
                      flush=True)  # fmt: skip
        finally:
            if sink is not None:
                sink.close()
            broker.kill()
    figures = {
        "source": args.source if args.device is None else f"mic {args.device}",
        "model": str(args.model),
        "seconds_per_run": args.seconds,
        "ms_cpu_per_audio_s": [r["ms_cpu_per_audio_s"] for r in runs],
        "median_ms_cpu_per_audio_s": statistics.median(r["ms_cpu_per_audio_s"] for r in runs),
        "runs": runs,
        "machine": f"{os.cpu_count()} cores, {cpu_model()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps({k: v for k, v in figures.items() if k != "runs"}))
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
