"""`soundmon run --report PATH`: the run's own timings, written as JSON when it ends.

For `soundmon bench`, which runs the real daemon as a child and reads this file: steady-state
CPU (from the first window result to the end), the time per stage, and which model runner ran.
The daemon counts what the pipeline does not (`RunTimings`); the rest comes from the pipeline's
own stats. Nothing here changes what the daemon does or publishes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from monitor.pipeline import Pipeline

__all__ = ["RunTimings", "own_peak_rss_mb", "runner_counters"]


@dataclass
class RunTimings:
    """What the daemon measures beside the pipeline's stats: when the first window result came
    (monotonic clock, CPU time and audio offset), and the time spent publishing detections and
    building and publishing `<base>/scores`."""

    first_window_monotonic: float | None = None
    first_window_cpu_s: float = 0.0
    first_window_audio_s: float = 0.0
    publish_s: float = 0.0
    scores_s: float = 0.0
    scores_messages: int = 0

    def window_done(self, end_offset_s: float) -> bool:
        """Note a window result; True for the run's first one (its moment is kept)."""
        if self.first_window_monotonic is not None:
            return False
        self.first_window_monotonic = time.monotonic()
        self.first_window_cpu_s = time.process_time()
        self.first_window_audio_s = end_offset_s
        return True

    def report(self, pipeline: Pipeline, runner: Any, events: int, spool_depth: int) -> dict[str, Any]:
        """The JSON object `soundmon bench` reads (`monitor.bench.figures_from`); CPU time is
        taken now. `runner` is the main model's runner, `events` the events started,
        `spool_depth` the detections still waiting for the broker."""
        st = pipeline.stats
        inf = np.fromiter(st.recent_inference_ms, dtype=np.float64) if st.recent_inference_ms else np.zeros(1)
        return {
            "audio_s": pipeline.offset_s,
            "windows": st.windows,
            "gated_windows": st.gated_windows,
            "events": events,
            "first_window_monotonic": self.first_window_monotonic or 0.0,
            "first_window_audio_s": self.first_window_audio_s,
            "cpu_s_at_first_window": self.first_window_cpu_s,
            "cpu_s_at_end": time.process_time(),
            "frontend_s": st.frontend_s,
            "inference_s": st.inference_s,
            "detector_s": st.detector_s,
            "publish_s": self.publish_s,
            "scores_s": self.scores_s,
            "scores_messages": self.scores_messages,
            "inference_ms_p50": float(np.percentile(inf, 50)),
            "inference_ms_p95": float(np.percentile(inf, 95)),
            "spool_depth": spool_depth,
            "own_peak_rss_mb": own_peak_rss_mb(),
            **runner_counters(runner),
        }

    def write(self, path: Path, pipeline: Pipeline, runner: Any, events: int, spool_depth: int) -> None:
        """Write `report(...)` to `path`."""
        Path(path).write_text(json.dumps(self.report(pipeline, runner, events, spool_depth)))


def runner_counters(runner: Any) -> dict[str, Any]:
    """`runner` (window or streaming) and, for a `StreamingRunner`, its `stream_steps` (hops run as
    one step) and `stream_rebuilds` (windows that rebuilt its state); None for a window model."""
    from monitor.stream_runner import StreamingRunner

    if isinstance(runner, StreamingRunner):
        return {"runner": "streaming", "stream_steps": runner.steps, "stream_rebuilds": runner.rebuilds}
    return {"runner": "window", "stream_steps": None, "stream_rebuilds": None}


def own_peak_rss_mb() -> float | None:
    """This process's peak RSS so far in MB (VmHWM of /proc/self/status), None where unreadable.

    Why not the parent's wait4 figure: Linux starts a child's peak-RSS count at its parent's at
    fork/exec, so a parent larger than the daemon (bench, holding YAMNet for --compare-tflite)
    would be reported as the daemon's peak; VmHWM belongs to the process image after exec."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None
