"""A Butterworth low-pass: a street sound as heard through a closed window, a wall or from afar.

One filter for both uses, so they mean the same thing: the distillation copies heard through it
(`soundmon train --distill-lowpass`, `training.distill`) and the recordings folder written through
it for evaluation (`tools.lowpass_recordings`). scipy's design; order 2 is 12 dB per octave past
the cutoff (about a pane of glass), order 4 is 24 (a wall).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfilt

__all__ = ["lowpass"]


def lowpass(x: np.ndarray, sample_rate: int, cutoff_hz: float, order: int = 2) -> np.ndarray:
    """`x` through a Butterworth low-pass of `order` at `cutoff_hz` (float32, same length)."""
    sos = butter(order, cutoff_hz, "low", fs=sample_rate, output="sos")
    return sosfilt(sos, np.asarray(x, dtype=np.float64)).astype(np.float32)
