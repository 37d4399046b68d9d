"""Window placement and on-the-fly, seedable, switchable augmentation on cached log-mel features.

Everything works in the log-mel (dB) domain, so nothing has to be recomputed from audio:

- placement: the clip's real frames go into one 4 s window. Evaluation uses the daemon's rule
  (start of the window, digital silence after it); training may put the clip anywhere in the
  window (time shift) and crops long clips at a random offset. An onset placement puts only
  the clip's first 0.3 s or more at the end of the window, as the daemon's newest window holds
  a sound that has just begun: the model learns to answer then, not seconds later.
- time stretch: the frame axis is resampled by a factor (linear interpolation) -- the
  spectrogram-domain equivalent of a tempo change without pitch change.
- pitch shift: the mel axis is shifted by a fraction of bands (the mel scale is close to
  logarithmic above 1 kHz, where a shift is a pitch change).
- gain: a constant dB offset (exact in the log domain), floored at digital silence.
- mixing: another clip is added in the power domain at a random SNR; the label becomes the
  energy-weighted mixture of the two labels (between-class learning). Background mixing adds a
  synthetic coloured noise floor at a random SNR (label unchanged), which also hides the
  digital silence that zero padding leaves and that a live microphone never produces.
- equaliser: a smooth random gain curve over the mel bands (another microphone or room).
- spectrogram masking (SpecAugment): time and frequency bands set to the normalisation mean.

`AugmentConfig.off()` switches all of it off; the same seed gives the same batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

__all__ = ["AUGMENTATIONS", "AugmentConfig", "Augmenter", "place_in_window"]


# name -> the AugmentConfig fields that switch it off
AUGMENTATIONS: dict[str, dict] = {
    "time_shift": {"time_shift": False},
    "onset": {"p_onset": 0.0},
    "gain": {"gain_db": 0.0},
    "mix": {"p_mix": 0.0},
    "background": {"p_background": 0.0},
    "stretch": {"p_stretch": 0.0},
    "pitch": {"p_pitch": 0.0},
    "eq": {"p_eq": 0.0},
    "masks": {"time_masks": 0, "freq_masks": 0},
}


@dataclass(frozen=True)
class AugmentConfig:
    """The augmentation recipe of one training run (recorded with the run's settings: `to_dict`).

    Each field is commented below; a probability `p_*` is per window in [0, 1], ranges are
    (low, high) drawn uniformly, dB values are offsets in the log-mel domain, masks count and
    widths are in frames or mel bands. `enabled=False` switches all of it off (`off()`);
    `AUGMENTATIONS` names the fields that switch each augmentation off (`only()`).
    """

    enabled: bool = True
    time_shift: bool = (
        True  # random position of a short clip in the window; random crop of long ones
    )
    p_start: float = 0.3  # probability of the evaluation placement (start of the window)
    p_onset: float = 0.25  # probability of an onset placement: only the clip's first part, at the window's end
    onset_min_frames: int = 30  # shortest visible start in an onset placement (0.3 s)
    gain_db: float = 10.0  # uniform in [-gain_db, +gain_db]
    p_mix: float = 0.5  # probability of mixing with another clip
    mix_snr_db: tuple[float, float] = (0.0, 12.0)  # SNR of the main clip over the mixed-in one
    p_background: float = 0.5  # probability of a synthetic noise floor
    background_snr_db: tuple[float, float] = (10.0, 40.0)
    p_stretch: float = 0.3
    stretch: tuple[float, float] = (0.85, 1.15)
    p_pitch: float = 0.3
    pitch_bands: float = 2.0  # mel bands, uniform in [-x, +x]
    p_eq: float = 0.0  # probability of a random smooth equaliser curve (another microphone)
    eq_db: float = 6.0  # its largest deviation, dB
    time_masks: int = 2
    time_mask_frames: int = 40
    freq_masks: int = 2
    freq_mask_bands: int = 8

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation: windows placed as the daemon places them (evaluation)."""
        return cls(enabled=False)

    @classmethod
    def only(cls, names: list[str]) -> AugmentConfig:
        """The defaults with every augmentation not named switched off (`soundmon train
        --augment time_shift,gain` is the plain-CNN recipe of the literature). ValueError for a
        name not in `AUGMENTATIONS`."""
        unknown = sorted(set(names) - set(AUGMENTATIONS))
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; choose from {list(AUGMENTATIONS)}")
        off = {k: v for name, kw in AUGMENTATIONS.items() if name not in names for k, v in kw.items()}
        return cls(**off)

    def with_(self, **kw) -> AugmentConfig:
        """A copy with the fields in `kw` replaced."""
        return replace(self, **kw)

    def to_dict(self) -> dict:
        """Every field, as plain values (for the run's recorded settings)."""
        return asdict(self)


def place_in_window(
    logmel: np.ndarray, n_valid: int, window_frames: int, offset: int = 0, floor: float = -100.0
) -> np.ndarray:
    """Put frames [0, n_valid) of a clip at `offset` in a window filled with digital silence.

    Long clips: a window starting `offset` frames into the clip. With offset 0 a short clip
    gives the evaluation placement (up to the 2-3 frames that straddle the clip's end).
    """
    n_mels = logmel.shape[1]
    content = logmel[: max(n_valid, 1)]
    if len(content) >= window_frames:
        start = min(offset, len(content) - window_frames)
        return np.ascontiguousarray(content[start : start + window_frames], dtype=np.float32)
    out = np.full((window_frames, n_mels), floor, dtype=np.float32)
    offset = min(max(offset, 0), window_frames - len(content))
    out[offset : offset + len(content)] = content
    return out


def _interp_axis(x: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of `x` at fractional `positions` along `axis` (clamped at the ends)."""
    n = x.shape[axis]
    pos = np.clip(positions, 0, n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo).astype(np.float32)
    a = np.take(x, lo, axis=axis)
    b = np.take(x, hi, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = len(pos)
    w = w.reshape(shape)
    return a * (1 - w) + b * w


def _db_add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Power-domain sum of two dB arrays."""
    m = np.maximum(a, b)
    return m + 10.0 * np.log10(1.0 + 10.0 ** ((np.minimum(a, b) - m) / 10.0))


def _mean_power_db(x: np.ndarray, floor: float) -> float:
    real = x[x > floor + 1.0]
    if real.size == 0:
        return floor
    return float(10.0 * np.log10(np.mean(10.0 ** (real / 10.0)) + 1e-30))


class Augmenter:
    """Turns cached clips into training batches: (x normalised, (B, frames, mels, 1)), soft labels.

    Augmenting cached log-mel features, not audio, keeps every epoch cheap (module docstring).
    Parameters: `config`, the recipe; `window_frames`, the model's window in frames; `n_classes`,
    the label count (width of the soft labels); `norm_mean`, `norm_std`, the normalisation the
    bundle records (x = (dB - mean) / std); `floor`, digital silence in dB (padding and the lower
    bound after gain); `seed`, for `numpy.random.default_rng` (the same seed, the same batches).
    """

    def __init__(
        self,
        config: AugmentConfig,
        window_frames: int,
        n_classes: int,
        norm_mean: float,
        norm_std: float,
        floor: float = -100.0,
        seed: int | list[int] = 0,
    ) -> None:
        self.cfg = config
        self.window_frames = window_frames
        self.n_classes = n_classes
        self.mean = float(norm_mean)
        self.std = float(norm_std)
        self.floor = float(floor)
        self.rng = np.random.default_rng(seed)

    # -- single-clip pieces -------------------------------------------------------------
    def _content(self, logmel: np.ndarray, n_valid: int) -> np.ndarray:
        cfg, rng = self.cfg, self.rng
        x = logmel[: max(n_valid, 1)]
        if cfg.p_stretch and rng.random() < cfg.p_stretch:
            r = rng.uniform(*cfg.stretch)
            n_new = max(1, int(round(len(x) * r)))
            x = _interp_axis(x, np.linspace(0, len(x) - 1, n_new), axis=0)
        if cfg.p_pitch and cfg.pitch_bands and rng.random() < cfg.p_pitch:
            s = rng.uniform(-cfg.pitch_bands, cfg.pitch_bands)
            x = _interp_axis(x, np.arange(x.shape[1]) - s, axis=1)
        return x

    def _place(self, x: np.ndarray) -> np.ndarray:
        cfg, rng, wf = self.cfg, self.rng, self.window_frames
        n = len(x)
        if cfg.time_shift and cfg.p_onset and rng.random() < cfg.p_onset:
            # What the daemon sees just after a sound begins: its first k frames at the end of
            # the window, whatever came before (silence here, another clip if mixed) ahead of it.
            k = int(rng.integers(min(n, cfg.onset_min_frames, wf), min(n, wf) + 1))
            return place_in_window(x[:k], k, wf, wf - k, self.floor)
        if not cfg.time_shift or rng.random() < cfg.p_start:
            offset = 0
        elif n >= wf:
            offset = int(rng.integers(0, n - wf + 1))
        else:
            offset = int(rng.integers(0, wf - n + 1))
        return place_in_window(x, n, wf, offset, self.floor)

    def _eq_curve(self, n_mels: int) -> np.ndarray:
        """A smooth random gain curve over the mel bands (3 cosine terms), peak |dB| <= eq_db."""
        pos = np.linspace(0.0, np.pi, n_mels)
        coef = self.rng.normal(0.0, 1.0, 3)
        curve = sum(
            c * np.cos((k + 1) * pos + self.rng.uniform(0, np.pi)) for k, c in enumerate(coef)
        )
        peak = np.max(np.abs(curve)) + 1e-9
        return (curve / peak * self.rng.uniform(0.0, self.cfg.eq_db)).astype(np.float32)

    def _background(self, x: np.ndarray) -> np.ndarray:
        cfg, rng = self.cfg, self.rng
        level = _mean_power_db(x, self.floor) - rng.uniform(*cfg.background_snr_db)
        n_frames, n_mels = x.shape
        tilt = rng.uniform(-15.0, 5.0) * np.linspace(0.0, 1.0, n_mels)  # dB across the bands
        shape = level + tilt - tilt.mean() + rng.normal(0.0, 2.0, n_mels)
        # Per-frame fluctuation of a noise power estimate (log of a gamma variable).
        fluct = 10.0 * np.log10(rng.gamma(8.0, 1.0 / 8.0, size=(n_frames, n_mels)) + 1e-6)
        noise = (shape[None, :] + fluct).astype(np.float32)
        return _db_add(x, noise)

    def window(self, logmel: np.ndarray, n_valid: int) -> np.ndarray:
        """One training window in dB (un-normalised), augmented unless switched off."""
        if not self.cfg.enabled:
            return place_in_window(logmel, n_valid, self.window_frames, 0, self.floor)
        return self._place(self._content(logmel, n_valid))

    # -- batches --------------------------------------------------------------------------
    def batch(
        self, feats: list, labels: np.ndarray, indices: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Windows for `indices` into `feats`/`labels`; mixing partners come from all of `feats`.

        `feats` are cached clips (each with `logmel` in dB and `n_valid` real frames), `labels`
        their class indices. Returns (x, y): x (B, window_frames, n_mels, 1) float32 normalised
        and masked, y (B, n_classes) float32 soft labels (one-hot unless mixed)."""
        cfg, rng = self.cfg, self.rng
        B = len(indices)
        xs = np.empty((B, self.window_frames, feats[0].logmel.shape[1]), dtype=np.float32)
        ys = np.zeros((B, self.n_classes), dtype=np.float32)
        for j, i in enumerate(indices):
            f = feats[i]
            x = self.window(f.logmel, f.n_valid)
            y = np.zeros(self.n_classes, dtype=np.float32)
            y[labels[i]] = 1.0
            if cfg.enabled:
                if cfg.p_mix and rng.random() < cfg.p_mix:
                    k = int(rng.integers(0, len(feats)))
                    other = self.window(feats[k].logmel, feats[k].n_valid)
                    snr = rng.uniform(*cfg.mix_snr_db)
                    shift = _mean_power_db(x, self.floor) - snr - _mean_power_db(other, self.floor)
                    other = np.maximum(other + shift, self.floor)
                    lam = 1.0 / (1.0 + 10.0 ** (snr / 10.0))  # energy share of the mixed-in clip
                    x = _db_add(x, other)
                    y *= 1.0 - lam
                    y[labels[k]] += lam
                if cfg.p_eq and rng.random() < cfg.p_eq:
                    x = np.maximum(x + self._eq_curve(x.shape[1]), self.floor)
                if cfg.gain_db:
                    x = np.maximum(x + rng.uniform(-cfg.gain_db, cfg.gain_db), self.floor)
                if cfg.p_background and rng.random() < cfg.p_background:
                    x = self._background(x)
            xs[j] = x
            ys[j] = y
        xs = (xs - self.mean) / self.std
        if cfg.enabled:
            self._mask(xs)
        return xs[..., None], ys

    def _mask(self, xs: np.ndarray) -> None:
        spec_masks(xs, self.cfg, self.rng)


def spec_masks(xs: np.ndarray, cfg, rng: np.random.Generator) -> None:
    """SpecAugment masks on normalised log-mel windows (time x mel), in place: masked cells get
    0, the normalised mean. `cfg` gives time_masks, time_mask_frames, freq_masks, freq_mask_bands
    (an AugmentConfig or a DistillConfig)."""
    _, T, F = xs.shape
    for x in xs:
        for _ in range(cfg.time_masks):
            w = int(rng.integers(0, cfg.time_mask_frames + 1))
            t0 = int(rng.integers(0, max(1, T - w)))
            x[t0 : t0 + w] = 0.0
        for _ in range(cfg.freq_masks):
            w = int(rng.integers(0, cfg.freq_mask_bands + 1))
            f0 = int(rng.integers(0, max(1, F - w)))
            x[:, f0 : f0 + w] = 0.0
