"""The log-mel front-end: the one implementation used by training (batch) and the daemon (streaming).

Both modes run the same per-frame arithmetic (`_frames_to_logmel`), so a stream cut into
arbitrary blocks yields the same frames as one batch call over the whole signal. The dB
reference is fixed (never the window's own maximum), so loudness survives and windows
computed at different times agree.

The mel filter bank is built here with numpy (Slaney mel scale and area normalisation, the
librosa default) instead of importing librosa: the daemon must start fast and librosa pulls
in numba, whose first compile takes ~15 s. A test checks it against `librosa.filters.mel`.

Front-end variants are parameters of this one implementation, never a second front-end.
`YAMNET_FRONTEND` is YAMNet's (as its TF Hub export computes it, in float): frames of 400
samples (not 512) whose periodic Hann window is zero-padded to a 512-point FFT, magnitude,
64 HTK mel bands 125-7500 Hz built as `tf.signal.linear_to_mel_weight_matrix` builds them,
natural log of mel + 0.001. A bundle declares every parameter; `KNOWN_FRONTENDS` are the ones
this daemon runs (`known_variant` / `variant_mismatch` say which, or what differs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

__all__ = [
    "DEFAULT_FRONTEND",
    "FrontendParams",
    "KNOWN_FRONTENDS",
    "YAMNET_FRONTEND",
    "LogMelFrontend",
    "StreamingLogMel",
    "frame_count",
    "known_variant",
    "mel_filterbank",
    "variant_mismatch",
]

# Parameters added after the first bundles: written to a bundle only when they differ from
# these defaults, so a default bundle's JSON stays exactly as before (and an older soundmon
# still reads it); a bundle without them loads with these values.
_LATER_DEFAULTS = {"frame_length": None, "log_scale": "db", "log_offset": 0.0}


@dataclass(frozen=True)
class FrontendParams:
    """Every parameter that changes the features; stored in the model bundle and checked at start.

    A model only scores right on the features it was trained on, so the bundle carries them all
    and the daemon refuses one it does not run (`variant_mismatch`). Sizes are in samples at
    `sample_rate` (Hz), frequencies in Hz; each field's meaning is commented below.
    """

    sample_rate: int = 16000
    win_length: int = 400  # 25 ms Hann window, centred in the frame
    n_fft: int = 512  # FFT size (frame span too unless frame_length says otherwise: 4.0 s -> 397 frames)
    hop_length: int = 160  # the frame step, 10 ms (librosa's name, a bundle JSON key; not the window hop)
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    # "slaney": Slaney mel scale with area-normalised triangles (librosa default);
    # "htk": HTK mel scale (1127 ln(1 + f/700)), unnormalised triangles on the mel axis, DC bin
    # zero (tf.signal.linear_to_mel_weight_matrix: YAMNet, VGGish)
    mel_scale: str = "slaney"
    power: float = 2.0  # power spectrum (1.0: magnitude)
    amin: float = 1e-10  # floor before log: digital silence is -100 dB (log_scale "db")
    ref: float = 1.0  # fixed dB reference (full-scale float audio) (log_scale "db")
    center: bool = False
    # Samples per frame, None = n_fft (librosa center=False: 4.0 s -> 397 frames). YAMNet and
    # tf.signal.stft frame win_length samples and zero-pad them to n_fft (0.975 s -> 96 frames);
    # the magnitude is the same wherever the window sits in the FFT frame.
    frame_length: int | None = None
    log_scale: str = "db"  # "db": 10 log10(max(mel, amin) / ref); "ln": ln(mel + log_offset)
    log_offset: float = 0.0  # added before the natural log (log_scale "ln"; YAMNet: 0.001)

    @property
    def frame_span(self) -> int:
        """Samples one frame covers (n_fft unless frame_length is set)."""
        return self.n_fft if self.frame_length is None else self.frame_length

    def to_dict(self) -> dict:
        """The bundle's "frontend" object: every field, except those added later while they
        keep their old default (so an older soundmon still reads a default bundle)."""
        out = asdict(self)
        for key, default in _LATER_DEFAULTS.items():
            if out[key] == default:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> FrontendParams:
        """Build from a bundle's dict; unknown keys are an error so a newer bundle is not misread.

        Missing keys take the defaults; ValueError names the unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown front-end parameter(s) {unknown}; this soundmon knows {sorted(known)}")
        return cls(**data)

    def frames_for(self, seconds: float) -> int:
        """Number of frames in a window of `seconds` (4.0 s -> 397 with the defaults)."""
        return frame_count(int(round(seconds * self.sample_rate)), self)


DEFAULT_FRONTEND = FrontendParams()
YAMNET_FRONTEND = FrontendParams(
    fmin=125.0, fmax=7500.0, mel_scale="htk", power=1.0, frame_length=400, log_scale="ln", log_offset=0.001
)
KNOWN_FRONTENDS: dict[str, FrontendParams] = {"soundmon": DEFAULT_FRONTEND, "yamnet": YAMNET_FRONTEND}


def known_variant(params: FrontendParams) -> str | None:
    """Name of the known front-end variant `params` equals, or None."""
    for name, known in KNOWN_FRONTENDS.items():
        if params == known:
            return name
    return None


def variant_mismatch(params: FrontendParams) -> str | None:
    """None if `params` is a known variant; else one line naming what differs from the nearest one."""
    if known_variant(params) is not None:
        return None
    mine = asdict(params)
    best = None
    for name, known in KNOWN_FRONTENDS.items():
        ref = asdict(known)
        diffs = [k for k in mine if mine[k] != ref[k]]
        if best is None or len(diffs) < len(best[2]):
            best = (name, ref, diffs)
    name, ref, diffs = best
    who = "daemon" if name == "soundmon" else f"daemon's {name} variant"
    return ", ".join(f"{k}={mine[k]!r} ({who}: {ref[k]!r})" for k in diffs)


def frame_count(n_samples: int, params: FrontendParams) -> int:
    """Frames that `n_samples` yield with center=False framing (a frame spans `frame_span` samples)."""
    span = params.frame_span
    if n_samples < span:
        return 0
    return 1 + (n_samples - span) // params.hop_length


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (as librosa with htk=False)."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-9) / min_log_hz) / logstep, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


def _htk_mel_filterbank(params: FrontendParams) -> np.ndarray:
    """HTK-scale triangles built on the mel axis, unnormalised, DC bin zero: the construction of
    tf.signal.linear_to_mel_weight_matrix (YAMNet), in float64."""
    n_bins = params.n_fft // 2 + 1

    def hz_to_mel(hz):
        return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)

    bin_mels = hz_to_mel(np.linspace(0.0, params.sample_rate / 2, n_bins)[1:])[:, None]
    edges = np.linspace(hz_to_mel(params.fmin), hz_to_mel(params.fmax), params.n_mels + 2)
    lower, centre, upper = edges[:-2][None, :], edges[1:-1][None, :], edges[2:][None, :]
    rise = (bin_mels - lower) / (centre - lower)
    fall = (upper - bin_mels) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rise, fall))  # (n_bins - 1, n_mels)
    out = np.zeros((params.n_mels, n_bins), dtype=np.float64)
    out[:, 1:] = weights.T
    return out.astype(np.float32)


def mel_filterbank(params: FrontendParams) -> np.ndarray:
    """Mel filter bank, shape (n_mels, n_fft // 2 + 1): equal to librosa.filters.mel(norm='slaney')
    for mel_scale 'slaney', to tf.signal.linear_to_mel_weight_matrix (transposed) for 'htk'."""
    if params.mel_scale == "htk":
        return _htk_mel_filterbank(params)
    if params.mel_scale != "slaney":
        raise ValueError(f"mel_scale {params.mel_scale!r} is not supported ('slaney' or 'htk')")
    n_bins = params.n_fft // 2 + 1
    fft_freqs = np.linspace(0.0, params.sample_rate / 2, n_bins)
    mel_pts = _mel_to_hz(np.linspace(_hz_to_mel(params.fmin), _hz_to_mel(params.fmax), params.n_mels + 2))
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_pts[2 : params.n_mels + 2] - mel_pts[: params.n_mels])
    return (weights * enorm[:, None]).astype(np.float32)


def _mean_square(frames: np.ndarray) -> np.ndarray:
    """Mean square of each frame (one pass, no temporary of the frames' size)."""
    out = np.einsum("ij,ij->i", frames, frames, dtype=np.float64)
    out /= frames.shape[1]
    return out


class LogMelFrontend:
    """Batch log-mel: audio (float32, mono, at `sample_rate`) -> (frames, n_mels) float32, in dB
    (log_scale "db") or natural log (log_scale "ln"); call it with the signal.

    Training computes its features with this class, and `StreamingLogMel` runs its arithmetic, so
    both sides see the same numbers. Parameters: `params`, the front-end (None: the default
    `FrontendParams()`). ValueError for settings it cannot run: center=True, not win_length <=
    frame_span <= n_fft, another log_scale or mel_scale, or "ln" without log_offset > 0.
    """

    def __init__(self, params: FrontendParams | None = None) -> None:
        self.params = params or FrontendParams()
        p = self.params
        if p.center:
            raise ValueError("center=True framing is not supported: it breaks streaming parity")
        span = p.frame_span
        if not p.win_length <= span <= p.n_fft:
            raise ValueError("need win_length <= frame_length <= n_fft")
        if p.log_scale not in ("db", "ln"):
            raise ValueError(f"log_scale {p.log_scale!r} is not supported ('db' or 'ln')")
        if p.log_scale == "ln" and not p.log_offset > 0:
            raise ValueError("log_scale 'ln' needs log_offset > 0")
        self.mel_basis = mel_filterbank(p)  # (n_mels, n_bins)
        self._mel_basis_t = np.ascontiguousarray(self.mel_basis.T)
        # Periodic Hann of win_length, centred in a frame of frame_span samples with zeros (as
        # librosa.stft); the FFT zero-pads a shorter frame to n_fft (as tf.signal.stft).
        hann = np.hanning(p.win_length + 1)[:-1]
        left = (span - p.win_length) // 2
        self.window = np.zeros(span, dtype=np.float32)
        self.window[left : left + p.win_length] = hann
        self._window64 = self.window.astype(np.float64)
        self._log_ref = 10.0 * np.log10(max(p.ref, p.amin))

    def frames(self, audio: np.ndarray) -> np.ndarray:
        """View of `audio` as overlapping frames, shape (n_frames, frame_span); no copy."""
        p = self.params
        span = p.frame_span
        n = frame_count(len(audio), p)
        if n == 0:
            return np.empty((0, span), dtype=np.float32)
        # A strided view built directly: sliding_window_view's argument checks cost ~35 us per
        # call (a third of the front-end's time on 0.1 s blocks) and as_strided's wrapper ~3 us.
        audio = np.ascontiguousarray(audio)
        step = audio.itemsize
        view = np.ndarray((n, span), dtype=audio.dtype, buffer=audio, strides=(p.hop_length * step, step))
        view.flags.writeable = False
        return view

    def _frames_to_logmel(self, frames: np.ndarray) -> np.ndarray:
        return self._frames64_to_logmel(frames.astype(np.float64))

    def _frames64_to_logmel(self, frames64: np.ndarray) -> np.ndarray:
        """Log-mel of frames already in float64 (a copy of the samples' frames, whose rows are
        windowed in place: the streaming front-end reuses its float64 copy for the energies)."""
        p = self.params
        # float64 on purpose: numpy's pocketfft is ~3.5x faster on float64 rows than on float32
        # (measured: 50 frames of 512 in 0.05 ms vs 0.18 ms). Windowing the float64 copy gives
        # the products float32 frames x float64 window would (the float32 -> float64 cast is exact).
        np.multiply(frames64, self._window64, out=frames64)
        spec = np.fft.rfft(frames64, n=p.n_fft, axis=-1)
        # real**2 + imag**2: the (real, imag) pairs squared in place as one contiguous float64
        # array, then each pair summed (speed: no strided squares, no temporaries); for power 2
        # the sum is cast to float32 as it is stored, as `.astype(np.float32)` of it would be.
        parts = spec.view(np.float64)
        np.square(parts, out=parts)
        if p.power == 2.0:
            power32 = np.empty((len(parts), parts.shape[1] // 2), dtype=np.float32)
            np.add(parts[:, 0::2], parts[:, 1::2], out=power32, casting="same_kind")
        else:
            power = np.add(parts[:, 0::2], parts[:, 1::2])
            if p.power == 1.0:
                np.sqrt(power, out=power)
            else:
                power = power ** (p.power / 2.0)
            power32 = power.astype(np.float32)
        mel = power32 @ self._mel_basis_t
        if p.log_scale == "ln":
            mel += np.float32(p.log_offset)
            return np.log(mel, out=mel)
        # In place (speed): 10 * log10(max(mel, amin)) - log_ref. The subtraction computes in the
        # type `mel - log_ref` would have and casts into float32, as `.astype(np.float32)` did.
        np.maximum(mel, p.amin, out=mel)
        np.log10(mel, out=mel)
        mel *= 10.0
        return np.subtract(mel, self._log_ref, out=mel, casting="same_kind")

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Log-mel of a whole signal: (n_frames, n_mels) float32 dB."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"expected mono audio (1-D), got shape {audio.shape}")
        frames = self.frames(audio)
        if len(frames) == 0:
            return np.empty((0, self.params.n_mels), dtype=np.float32)
        return self._frames_to_logmel(frames)

    def frame_energy(self, audio: np.ndarray) -> np.ndarray:
        """Mean square of the raw samples of each frame (for the level gate and level reports)."""
        return _mean_square(self.frames(np.asarray(audio, dtype=np.float32)))


class StreamingLogMel:
    """Incremental log-mel: feed blocks of any size, get only the frames they complete.

    Keeps the last `frame_span - hop_length` samples between calls (the overlap a new frame
    needs), so the cost per call is proportional to the new audio, and the output equals
    `LogMelFrontend` over the concatenated stream.

    Parameters: `params`, as for `LogMelFrontend` (same ValueErrors). `samples_seen` and
    `frames_emitted` count what went in and came out since it was made.
    """

    def __init__(self, params: FrontendParams | None = None) -> None:
        self.batch = LogMelFrontend(params)
        self.params = self.batch.params
        self._pending = np.zeros(0, dtype=np.float32)
        self.samples_seen = 0
        self.frames_emitted = 0

    @property
    def pending_samples(self) -> int:
        """Samples received but not yet framed (the start of the next frame); `reset` drops them."""
        return len(self._pending)

    def reset(self) -> None:
        """Forget buffered audio (after a gap in the stream)."""
        self._pending = np.zeros(0, dtype=np.float32)

    def samples_until(self, frames: int) -> int:
        """How many more samples complete `frames` more frames (0 if they are already buffered)."""
        p = self.params
        return max(0, (frames - 1) * p.hop_length + p.frame_span - len(self._pending))

    def process(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add `block`; return (new log-mel frames, their mean-square energies)."""
        p = self.params
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        self.samples_seen += len(block)
        buf = np.concatenate([self._pending, block]) if len(self._pending) else block
        n = frame_count(len(buf), p)
        if n == 0:
            self._pending = buf.copy()
            return np.empty((0, p.n_mels), dtype=np.float32), np.empty(0, dtype=np.float64)
        # One float64 copy of the frames serves both: the energies (einsum computes in float64
        # anyway) and then, windowed in place, the spectra.
        frames64 = self.batch.frames(buf).astype(np.float64)
        energy = _mean_square(frames64)
        logmel = self.batch._frames64_to_logmel(frames64)
        self._pending = buf[n * p.hop_length :].copy()
        self.frames_emitted += n
        return logmel, energy
