"""The streaming pipeline: model-rate audio blocks -> log-mel -> windows -> model -> detector.

One code path for every user: `soundmon classify`, `soundmon run` (microphone or file) and
`soundmon bench` all push audio through `Pipeline.process`, so what is measured and tested is
what runs. No I/O here: sources feed it, the daemon publishes what it returns.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from monitor.bundle import ModelBundle
from monitor.config import DetectionConfig
from monitor.detector import DetectionEvent, Detector
from monitor.fast_start import StartChecks
from monitor.frontend import FrontendParams, StreamingLogMel, frame_count
from monitor.stream_runner import NextWindow
from monitor.windows import WindowRing, hop_frames_for

__all__ = ["Pipeline", "PipelineStats", "WindowResult", "expected_windows", "level_dbfs"]

SILENCE_DBFS = -200.0


def level_dbfs(mean_square: float) -> float:
    """RMS level in dBFS (full-scale square wave = 0 dBFS; a full-scale sine is -3 dBFS)."""
    return float(10.0 * np.log10(mean_square)) if mean_square > 1e-20 else SILENCE_DBFS


def _with_energy(logmel: np.ndarray, energy) -> np.ndarray:
    """Frames for the window ring: the log-mel bands plus one column of mean-square energy, so
    a window's level travels with its frames (no second buffer to keep in step)."""
    frames = np.empty((len(logmel), logmel.shape[1] + 1), dtype=np.float32)
    frames[:, :-1] = logmel
    frames[:, -1] = energy
    return frames


def _level(window: np.ndarray) -> float:
    """A ring window's level in dBFS, from its energy column (NaN rows are warm-start padding)."""
    energy = window[:, -1]
    # np.mean's own arithmetic (a float64 sum divided by the count) without its wrapper (speed)
    mean_square = float(np.add.reduce(energy, dtype=np.float64) / len(energy))
    if mean_square != mean_square:  # NaN: a warm-start window, part of it is padding
        mean_square = float(np.nanmean(energy))
    return level_dbfs(mean_square)


def warm_start_samples(window_frames: int, hop_frames: int, params: FrontendParams) -> int:
    """Silence a warm start puts ahead of the stream: at least (window - hop) frames' worth,
    rounded up to whole hops so that, once a full window of audio has arrived, the windows are
    exactly the ones a cold start gives (same frames, same window ends)."""
    if window_frames <= hop_frames:
        return 0
    hops = -(-(window_frames - hop_frames) // hop_frames)
    return hops * hop_frames * params.hop_length


def expected_windows(
    n_samples: int, params: FrontendParams, window_frames: int, hop_frames: int, warm_start: bool
) -> int:
    """Windows a gap-free stream of `n_samples` yields (before end-of-stream padding)."""
    if warm_start:
        n_samples += warm_start_samples(window_frames, hop_frames, params)
    frames = frame_count(n_samples, params)
    return 1 + (frames - window_frames) // hop_frames if frames >= window_frames else 0


@dataclass
class WindowResult:
    """One result of the pipeline, in stream order: where it ends in the stream, its level, the
    main model's scores (None = gated), the start model's (fast start; None = off or gated) and
    the events it decided.

    `kind` says which: an analysis window ("window"), or with fast start a start-model check
    between two windows ("start_check": its level is the start model's frames', it has no main
    scores and is not counted in `PipelineStats.windows`; `index` is that of the next window).
    Every consumer publishes `events` alike; only a window adds to levels and clip scores.

    Fields: `index`, the window's number from 0; `end_offset_s`, the stream offset (seconds) of
    its last frame's end; `level_dbfs`, its level (the gate compares it with
    `detection.min_level_dbfs`); `scores`, in `bundle.labels` order; `inference_ms`, wall time of
    the model runs for it (0.0 when gated)."""

    index: int
    end_offset_s: float
    level_dbfs: float
    scores: np.ndarray | None
    events: list[DetectionEvent]
    inference_ms: float = 0.0
    start_scores: np.ndarray | None = None
    kind: Literal["window", "start_check"] = "window"


@dataclass
class PipelineStats:
    """Counters and recent timings for the stats message and the benchmark.

    `windows` scored or gated, `gated_windows` of them below the level gate, `samples` of audio
    consumed (padding excluded), `nonfinite_samples` replaced by 0; `frontend_s`,
    `inference_s`, `detector_s`, wall seconds spent in each; `recent_inference_ms`, the last
    4096 scored windows' inference times."""

    windows: int = 0
    gated_windows: int = 0
    nonfinite_samples: int = 0
    samples: int = 0
    frontend_s: float = 0.0
    inference_s: float = 0.0  # main and start model, windows and checks
    detector_s: float = 0.0
    recent_inference_ms: deque = field(default_factory=lambda: deque(maxlen=4096))

    def inference_percentiles(self) -> tuple[float, float]:
        """(p50, p95) inference time in ms over the recent windows (0 when none yet)."""
        if not self.recent_inference_ms:
            return 0.0, 0.0
        arr = np.fromiter(self.recent_inference_ms, dtype=np.float64)
        return float(np.percentile(arr, 50)), float(np.percentile(arr, 95))


def _detector_settings(cfg: DetectionConfig, labels: list[str], bundle: ModelBundle) -> dict:
    """The detector's settings from `detection.*`: a label that is not watched (`detection.watch`,
    else the bundle's default list) is disabled, so it never has an event."""
    return {
        "thresholds": cfg.thresholds(bundle.thresholds, labels),
        "enabled": cfg.enabled_labels(labels) & set(cfg.watched_labels(labels, bundle.watch)),
        "smoothing_windows": cfg.smoothing_windows,
        "class_smoothing": cfg.class_smoothing(bundle.class_smoothing_windows, labels),
        "fast_start_alone": cfg.fast_start_alone(bundle.fast_start_alone, labels),
        "release_ratio": cfg.release_ratio,
        "hold_seconds": cfg.hold_seconds,
        "cooldown_seconds": cfg.cooldown_seconds,
        "fast_start_threshold": cfg.fast_start_threshold,
        "start_weight": cfg.start_model_weight,
    }


class Pipeline:
    """Feed mono float32 blocks at the model's rate; get a `WindowResult` per completed window
    (and, with fast start, per start check between two windows).

    `runner` is anything with `predict(window) -> scores` (normally `monitor.runner.ModelRunner`).
    `start_runner` (from `monitor.fast_start.start_runner_for`) is the bundle's start model: with
    `detection.fast_start_threshold` set it scores the newest part of each window (its own
    window length) for the detector's fast start, and again half a hop after each window
    (a result of kind "start_check"; with an odd number of frames per hop there is none,
    `monitor.fast_start.check_frames`), so a sound that has just begun is answered sooner.

    With `warm_start` (the daemon's default, `detection.warm_start`) the first window comes one
    hop into the stream, not one window: the window is filled with digital silence ahead of
    the audio so far, as the model saw short clips in training, so a sound that is already
    playing when the service starts (or when a device comes back) is reported within a hop.
    `soundmon classify` keeps it off: its clip score is the training evaluation's window rule.

    Parameters: `bundle`, the model's bundle (labels, front-end, window); `runner` and
    `start_runner` as above (None: no fast start); `detection`, the detection settings in force
    (hop, gate, detector settings; `apply_detection_config` swaps them); `warm_start`, None =
    `detection.warm_start`; `start_offset_s`, the stream offset of its first sample: a pipeline
    that takes over a running stream (the daemon's model reload) goes on counting from there, so
    offsets stay "seconds since the audio stream began" and their wall-clock times stay true.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        runner,
        detection: DetectionConfig,
        warm_start: bool | None = None,
        start_runner=None,
        start_offset_s: float = 0.0,
    ) -> None:
        self.bundle = bundle
        self.runner = runner
        self.labels = list(bundle.labels)
        p = bundle.frontend
        self._sr = p.sample_rate
        self._hop_length = p.hop_length
        self._frame_span = p.frame_span  # samples one frame covers (400 for YAMNet's front-end, not n_fft)
        self.frontend = StreamingLogMel(p)
        self.window_frames = bundle.window_frames
        # One extra column carries each frame's mean-square energy, so the level of a window
        # travels with its frames through the ring (no second buffer to keep in step).
        self.ring = WindowRing(self.window_frames, hop_frames_for(detection.hop_seconds, p), p.n_mels + 1)
        self.start_checks: StartChecks | None = None
        self._set_start_checks(start_runner)
        self.detection = detection
        self.detector = Detector(self.labels, **_detector_settings(detection, self.labels, bundle))
        self.stats = PipelineStats()
        self._gap_samples = round(start_offset_s * self._sr)  # stream samples before this pipeline's first
        self._unframed_samples = 0  # received, then dropped unframed by a gap (`gap`)
        self._primed_samples = 0  # silence fed ahead of the stream by warm starts
        self.warm_start = detection.warm_start if warm_start is None else bool(warm_start)
        self._until: int | None = None  # `samples_until_window`, kept until the next change
        self._next = NextWindow()  # the last window scored, for a streaming runner's next step
        self._prime()
        self._align_checks()

    # -- configuration -------------------------------------------------------------------------

    def apply_detection_config(self, detection: DetectionConfig) -> list[DetectionEvent]:
        """Apply new thresholds, classes, smoothing, hold, gate and hop without a gap in audio.

        Returns the "end" events of labels no longer enabled (`Detector.reconfigure`)."""
        self.detection = detection
        self._until = None
        self._next.forget()
        self.ring.set_hop(hop_frames_for(detection.hop_seconds, self.bundle.frontend))
        if self.start_checks is not None:
            self.start_checks.set_hop(self.ring.hop_frames)
            self._align_checks()
        return self.detector.reconfigure(**_detector_settings(detection, self.labels, self.bundle))

    # -- streaming -----------------------------------------------------------------------------

    @property
    def offset_s(self) -> float:
        """Seconds of audio the pipeline has consumed (including gaps reported to it)."""
        return (self.stats.samples + self._gap_samples) / self._sr

    def _frame_end_offset(self, total_frames: int) -> float:
        end_sample = (total_frames - 1) * self._hop_length + self._frame_span
        return (end_sample + self._gap_samples + self._unframed_samples - self._primed_samples) / self._sr

    def _prime(self) -> None:
        """Warm start: put silence worth (window - hop) frames ahead of the audio to come."""
        self._until = None
        if not self.warm_start:
            return
        n = warm_start_samples(self.window_frames, self.ring.hop_frames, self.bundle.frontend)
        if n <= 0:
            return
        logmel, _ = self.frontend.process(np.zeros(n, dtype=np.float32))
        # NaN energy: not audio, left out of the window's level. Fewer frames than a window:
        # the push completes none (the start ring's windows of silence are dropped).
        frames = _with_energy(logmel, np.nan)
        self.ring.push(frames)
        if self.start_checks is not None:
            self.start_checks.push(frames)
        self._primed_samples += n

    @property
    def start_runner(self):
        """The start model's runner (fast start), or None."""
        return None if self.start_checks is None else self.start_checks.runner

    def set_start_runner(self, start_runner) -> None:
        """Swap the start model (SIGHUP turning fast start on or off) without a gap in audio;
        checks between windows begin once its window has filled with new frames."""
        self._until = None
        self._set_start_checks(start_runner)
        self._align_checks()

    def _set_start_checks(self, start_runner) -> None:
        # a new ring in step with the frames so far: its first check needs a whole start window
        self.start_checks = None if start_runner is None else StartChecks(
            start_runner, self.ring.hop_frames, self.ring.n_mels, start_at=self.ring.total_frames)  # fmt: skip

    def _align_checks(self) -> None:
        if self.start_checks is not None:
            self.start_checks.align(self.ring)

    @property
    def _checking(self) -> bool:
        """Fast start is on and has a start model: it scores each window's newest frames and the
        checks between windows."""
        return self.start_checks is not None and self.detection.fast_start_threshold is not None

    def samples_until_window(self) -> int:
        """Samples still needed to complete the next window (or, with fast start, the next start
        check): a caller that batches its audio up to this point computes the front-end once per
        result instead of once per block. Kept from one change of the stream or settings to the
        next (speed: the daemon asks before every read of audio)."""
        until = self._until
        if until is None:
            frames = self.ring.frames_until_window
            if self._checking:
                frames = min(frames, self.start_checks.frames_until_check)
            until = self._until = self.frontend.samples_until(frames)
        return until

    def process(self, block: np.ndarray) -> list[WindowResult]:
        """Consume one block of audio; return the windows it completed (often none) and, with
        fast start, the start checks between them, in stream order."""
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        if block.size == 0:
            return []
        self._until = None
        # A finite sum means every sample is finite (NaN and inf propagate through a sum); only
        # a non-finite sum (or one that overflowed) pays for the sample-by-sample test (speed).
        finite = np.isfinite(block) if not np.isfinite(np.add.reduce(block)) else None
        if finite is not None and not finite.all():
            # A broken driver or file: count and replace, never feed NaN/inf to the model.
            self.stats.nonfinite_samples += int(block.size - np.count_nonzero(finite))
            block = np.where(finite, block, 0.0).astype(np.float32)
        self.stats.samples += block.size
        t0 = time.perf_counter()
        logmel, energy = self.frontend.process(block)
        self.stats.frontend_s += time.perf_counter() - t0
        if len(logmel) == 0:
            return []
        frames = _with_energy(logmel, energy)
        windows = dict(self.ring.push(frames))
        if self.start_checks is None:
            return [self._score(end, window) for end, window in windows.items()]
        checks = self.start_checks.push(frames)
        results: list[WindowResult] = []
        for end in sorted(windows.keys() | checks.keys()):  # in stream order
            if end in windows:
                results.append(self._score(end, windows[end], checks.get(end)))
            elif self._checking:
                results.append(self._check(end, checks[end]))
        return results

    def _check(self, total_frames: int, window: np.ndarray) -> WindowResult:
        """A start-model check between windows: the detector's fast start on its newest frames."""
        end_offset = self._frame_end_offset(total_frames)
        level = _level(window)
        start_scores, inference_ms = None, 0.0
        if level >= self.detection.min_level_dbfs:
            t0 = time.perf_counter()
            start_scores = self.start_checks.scores(window, total_frames)
            inference_ms = (time.perf_counter() - t0) * 1000.0
            self.stats.inference_s += inference_ms / 1000.0
        t1 = time.perf_counter()
        events = self.detector.fast_start(end_offset, start_scores)
        self.stats.detector_s += time.perf_counter() - t1
        return WindowResult(self.stats.windows, end_offset, level, None, events, inference_ms, start_scores,
                            kind="start_check")  # fmt: skip

    def _score(self, total_frames: int, window: np.ndarray, start_window: np.ndarray | None = None) -> WindowResult:
        end_offset = self._frame_end_offset(total_frames)
        level = _level(window)
        scores: np.ndarray | None = None
        start_scores: np.ndarray | None = None
        inference_ms = 0.0
        if level >= self.detection.min_level_dbfs:
            t0 = time.perf_counter()
            # one hop after the last window scored here, a streaming runner steps without
            # comparing the two (`NextWindow`; the ring counts the frames of one stream)
            scores = self._next.predict(self.runner, window[:, :-1], total_frames)
            if self._checking:
                # the start ring's window, or the main window's newest frames while that ring
                # fills (fast start just turned on): the same frames
                start_scores = self.start_checks.scores(window if start_window is None else start_window,
                                                        total_frames)  # fmt: skip
            inference_ms = (time.perf_counter() - t0) * 1000.0
            self.stats.inference_s += inference_ms / 1000.0
            self.stats.recent_inference_ms.append(inference_ms)
        else:
            self.stats.gated_windows += 1
        t1 = time.perf_counter()
        events = self.detector.update(end_offset, scores, start_scores)
        self.stats.detector_s += time.perf_counter() - t1
        self.stats.windows += 1
        return WindowResult(self.stats.windows - 1, end_offset, level, scores, events, inference_ms, start_scores)

    def gap(self, missing_samples: int) -> list[DetectionEvent]:
        """The source lost audio (overrun or device reopen): restart framing, keep the clock true.

        `missing_samples`, the audio lost, at the model's rate, is added to the stream offsets.
        Returns the events ended by the gap (`Detector.reset`)."""
        self._gap_samples += int(missing_samples)
        # The audio the front-end held for its next frame is dropped with the framing: the frames
        # after the gap start that much later in the stream than the frame count says, so window
        # ends count it (else every later window ended up to a frame early, more after each gap).
        self._unframed_samples += self.frontend.pending_samples
        self._until = None
        self._next.forget()
        self.frontend.reset()
        self.ring.reset()
        if self.start_checks is not None:
            self.start_checks.reset()
        events = self.detector.reset()
        self._prime()
        self._align_checks()
        return events

    def finish(self) -> tuple[list[WindowResult], list[DetectionEvent]]:
        """End of stream: pad a stream shorter than one window with silence (placement 'start'),
        then end every open event. Returns (windows from the padding, closing events)."""
        results: list[WindowResult] = []
        if self.stats.windows == 0 and self.stats.samples > 0:
            if self.warm_start:
                need = self.frontend.samples_until(self.ring.frames_until_window)
            else:
                need = int(round(self.bundle.window_seconds * self._sr)) - self.stats.samples
            if need > 0:
                real = self.stats.samples
                results = self.process(np.zeros(need, dtype=np.float32))
                self.stats.samples = real  # padding is not audio the stream delivered
        return results, self.detector.close(self.offset_s)
