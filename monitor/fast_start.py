"""Fast start: a second, short "start model" that may open an event before the main model does.

A bundle's JSON may name a start model (`start_model`, attached by `python -m
training.attach_start`): a classifier with the same labels that hears only the newest second.
With `detection.fast_start_threshold` set, the pipeline scores it on the newest frames of every
window and once more between two windows (half a hop after each), and the detector may open an
event on its top label (`monitor.detector`, rule 4: `opened_by="start_model"`); events still
end by the main model's scores. The sound that has just begun is answered sooner (the median
onset latency of `soundmon bench --latency`).

Everything about it but the event rule lives here: whether it runs (`fast_start_on`), opening and
checking the start model (`start_runner_for`, `open_start_model`), when it is checked
(`check_frames`, `check_seconds`, `StartChecks`), and for `soundmon bench` the threshold of a
run and what the start model costs (`fast_start_arg`, `effective_fast_start`, `start_macs_per_hop`). The rule
sits with the detector's other rules: it reads and opens the detector's events and cooldowns.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from monitor.bundle import ModelBundle, load_bundle, macs_per_window
from monitor.config import DetectionConfig
from monitor.errors import BundleError
from monitor.runner import open_model, streams_at
from monitor.stream_runner import NextWindow
from monitor.windows import WindowRing, hop_frames_for

__all__ = [
    "StartChecks",
    "check_frames",
    "check_seconds",
    "effective_fast_start",
    "fast_start_arg",
    "fast_start_on",
    "open_start_model",
    "start_macs_per_hop",
    "start_runner_for",
]

# -- when it runs and which model --------------------------------------------------------------


def fast_start_on(bundle: ModelBundle, detection: Any) -> bool:
    """Fast start runs with this bundle: `detection.fast_start_threshold` is not None, and the
    bundle names a start model or the config set the threshold itself. The default threshold
    stays quietly off for a bundle without a start model (one trained without `--window-seconds
    1`); a threshold the user wrote for such a bundle is refused by `open_start_model`."""
    if detection.fast_start_threshold is None:
        return False
    return bundle.start_model_path is not None or "fast_start_threshold" in detection.model_fields_set


def check_frames(hop_frames: int) -> int:
    """Frames between the start model's checks: half a hop, so one check falls between two
    windows, or the hop itself when it is an odd number of frames."""
    return hop_frames // 2 if hop_frames % 2 == 0 else hop_frames


def check_seconds(bundle: ModelBundle, hop_seconds: float) -> float:
    """Seconds between the start model's checks at this hop (`check_frames`)."""
    p = bundle.frontend
    return check_frames(hop_frames_for(hop_seconds, p)) * p.hop_length / p.sample_rate


def open_start_model(bundle: ModelBundle, num_threads: int = 1, hop_seconds: float | None = None) -> Any:
    """The runner of `bundle`'s start model (`monitor.runner.open_model`, streaming at
    `hop_seconds` when its streaming model steps by that); BundleError when the bundle names none
    or one that does not fit it (other labels, a longer window)."""
    if bundle.start_model_path is None:
        raise BundleError(
            f"model {bundle.name}: detection.fast_start_threshold is set but the bundle names no start model"
        )
    start, runner = open_model(bundle.start_model_path, num_threads, hop_seconds)
    if start.labels != bundle.labels:
        raise BundleError(f"start model {start.name}: its labels differ from model {bundle.name}'s")
    if start.window_frames > bundle.window_frames:
        raise BundleError(
            f"start model {start.name}: its window ({start.window_seconds} s) is longer than "
            f"model {bundle.name}'s ({bundle.window_seconds} s)"
        )
    return runner


def start_runner_for(bundle: ModelBundle, detection: Any, num_threads: int = 1) -> Any:
    """The start model's runner when fast start is on (`fast_start_on`), else None (nothing is
    loaded while fast start is off). It steps by the pipeline's check interval (`check_seconds`),
    streaming when the start model's streaming hop is that."""
    if not fast_start_on(bundle, detection):
        return None
    return open_start_model(bundle, num_threads, check_seconds(bundle, detection.hop_seconds))


# -- inside the pipeline -----------------------------------------------------------------------


class StartChecks:
    """The start model's frames in the pipeline: a ring of its own (shorter) window that completes
    every `check_frames` of the main hop, kept in step with the main ring (`align`), so every
    window end is also a check and one check falls between two windows.

    `runner` is the start model's runner (`start_runner_for`); `hop_frames`, `n_mels` and
    `start_at` are the main ring's hop, width and frames so far (a ring added mid-stream, by a
    SIGHUP that turns fast start on, first fills a whole window of new frames)."""

    def __init__(self, runner: Any, hop_frames: int, n_mels: int, start_at: int) -> None:
        self.runner = runner
        self.window_frames: int = runner.bundle.window_frames
        self.ring = WindowRing(self.window_frames, check_frames(hop_frames), n_mels, start_at=start_at)
        self._next = NextWindow()  # the last window scored, for a streaming runner's next step

    @property
    def frames_until_check(self) -> int:
        """Frames still needed before the next check (>= 1)."""
        return self.ring.frames_until_window

    def align(self, main: WindowRing) -> None:
        """Check in step with the main ring: its next window end falls on the check grid."""
        self.ring.align(main.total_frames + main.frames_until_window)

    def set_hop(self, hop_frames: int) -> None:
        """The main hop changed (SIGHUP): check every `check_frames` of the new one."""
        self.ring.set_hop(check_frames(hop_frames))
        self._next.forget()

    def push(self, frames: np.ndarray) -> dict[int, np.ndarray]:
        """Add frames; return the start windows they completed, by the frame count they end at."""
        return dict(self.ring.push(frames))

    def reset(self) -> None:
        """After a gap in the audio: the next check needs a whole start window of new frames."""
        self.ring.reset()
        self._next.forget()

    def scores(self, window: np.ndarray, end: int | None = None) -> np.ndarray:
        """The start model's scores on a ring window: its newest `window_frames` frames (a main
        window when the start ring has not filled yet), the energy column left out. `end`: the
        frame count the window ends at (the rings' `total_frames`); one runner hop after the last
        window scored, a streaming runner steps without comparing them (`NextWindow`)."""
        return self._next.predict(self.runner, window[-self.window_frames :, :-1], end)


# -- for `soundmon bench` ----------------------------------------------------------------------


def fast_start_arg(text: str) -> float | str:
    """`soundmon bench --fast-start`: a threshold in (0, 1], or `off`."""
    if text == "off":
        return text
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"a threshold in (0, 1] or off, got {text}")
    return value


def effective_fast_start(bundle: ModelBundle, requested: float | str | None) -> float | None:
    """The fast-start threshold a bench run uses: `--fast-start T`, `off`, or (not given) what the
    daemon does by default with this bundle (`fast_start_on`; the bundle's own threshold when its
    JSON names one)."""
    if requested == "off":
        return None
    if requested is not None:
        return float(requested)
    default = DetectionConfig()
    default.apply_bundle_defaults(bundle.detection_defaults)
    return default.fast_start_threshold if fast_start_on(bundle, default) else None


def start_macs_per_hop(bundle: ModelBundle, hop_seconds: float) -> int:
    """Multiply-accumulates the bundle's start model adds per hop: one run per check (at each
    window and half a hop after it), its streaming model's step when that steps by the check
    interval, else its whole window; 0 when the bundle names none (the run then refuses fast start)."""
    if bundle.start_model_path is None:
        return 0
    start = load_bundle(bundle.start_model_path)
    check = check_seconds(bundle, hop_seconds)
    streamed = start.stream_meta.get("macs_per_hop") if streams_at(start, check) else None
    return int(streamed or macs_per_window(start.meta) or 0) * round(hop_seconds / check)
