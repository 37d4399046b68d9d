"""Runner latency: milliseconds per window (whole-window runner) and per hop (streaming runner).

Measured on synthetic windows at the bundle's normalisation, one thread, after a warm-up; the
figures a training report and model card quote.
"""

from __future__ import annotations

import time

import numpy as np

from monitor.bundle import ModelBundle
from monitor.runner import ModelRunner

__all__ = ["measure_latency", "measure_stream_latency"]


def measure_latency(bundle: ModelBundle, n: int = 300, threads: int = 1) -> dict:
    """Median/p95 ms per window of ModelRunner.predict on a realistic window, 1 thread."""
    runner = ModelRunner(bundle, num_threads=threads)
    rng = np.random.default_rng(0)
    w = bundle.norm_mean + bundle.norm_std * rng.standard_normal(
        (bundle.window_frames, bundle.frontend.n_mels)
    )
    w = w.astype(np.float32)
    for _ in range(20):
        runner.predict(w)
    return _time_calls(runner, [w] * n, threads)


def _time_calls(runner, windows: list[np.ndarray], threads: int) -> dict:
    """Median/p95 ms of `runner.predict` over `windows`, in order."""
    ts = []
    for w in windows:
        t = time.perf_counter()
        runner.predict(w)
        ts.append(time.perf_counter() - t)
    return {
        "median_ms": float(np.median(ts) * 1e3),
        "p95_ms": float(np.percentile(ts, 95) * 1e3),
        "calls": len(windows),
        "threads": threads,
        "runtime": runner.runtime,
    }


def measure_stream_latency(bundle: ModelBundle, n: int = 300, threads: int = 1) -> dict:
    """Median/p95 ms per hop of StreamingRunner.predict over consecutive windows, 1 thread."""
    from monitor.stream_runner import StreamingRunner

    runner = StreamingRunner(bundle, num_threads=threads)
    hop = runner.hop_frames
    rng = np.random.default_rng(0)
    frames = bundle.window_frames + hop * (n + 20)
    lm = (bundle.norm_mean + bundle.norm_std * rng.standard_normal((frames, bundle.frontend.n_mels))).astype(np.float32)
    windows = [lm[i * hop : i * hop + bundle.window_frames] for i in range(n + 20)]
    for w in windows[:20]:  # warm-up, and the first window rebuilds the kept rows
        runner.predict(w)
    return {**_time_calls(runner, windows[20:], threads), "hop_frames": hop,
            "macs_per_hop": bundle.stream_meta.get("macs_per_hop")}  # fmt: skip
