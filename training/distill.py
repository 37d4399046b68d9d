"""Distillation: `soundmon train --teacher BUNDLE` trains the small streaming CNN on the YAMNet
teacher's scores as well as on the labels, optionally with an 11th "background" output.

A patient, consistent teacher, made affordable on 2 cores:

- Every training source (the dataset's clips, plus extra audio: ESC-10 clips and 4 s stretches of
  the *seen* recordings of a `labels.csv` folder) gets `copies` augmented 4 s waveforms, made in
  the waveform domain so the teacher can hear them: placement (start, time shift, onset at the
  window's end, as `training.augment`), speed perturbation (resampling: tempo and pitch
  together), mixing with another source at 0-12 dB SNR (energy-weighted soft labels; partners
  come from the source's own fold or the extra audio, so no held-out clip leaks into a CV fold),
  gain, a coloured noise floor. SpecAugment masks stay student-only (applied per batch).
- The student's log-mel of each copy is cached; the teacher (a window model on the yamnet
  front-end, int8 through the daemon's `ModelRunner`) scores the same waveform's 0.975 s windows
  every 0.5 s, and the copy's teacher target is the energy-weighted mean of the window scores
  that pass the daemon's level gate (the windows holding the sound dominate, as the energy-weighted
  mixing labels do).
- Loss per example: `alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(teacher_T || student_T)`,
  the KL over the teacher's labels only (the student's distribution renormalised over them, so a
  background output is learnt from the labels alone), at temperature T.
- Background ("none of these", `--background`): ESC-10 clips of classes that are not ours and the
  unlabelled stretches of the seen recordings are labelled `background`; the bundle lists the
  other labels under `"watch"`, so the daemon never reports it.
- CV honesty: the teacher of CV fold k must not have heard fold k: fold k's teacher is
  `<teacher folds>/fold<k>` (default `<teacher>_cv/fold<k>`, what `soundmon train --backbone
  yamnet --cv` keeps), refused when its metadata says it trained on fold k. Recording stretches
  carry their recording's fold, so a fold-k recording never trains fold k's model.

The copies and teacher scores are cached on disk (`<cache>/distill/<key>/`), so a second run with
the same sources, augmentation and teachers starts training at once; CV folds and the final model
train side by side in `jobs` processes that read the cache by memory map.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Imported at the start (see training/train_job.py): an edit during a long run cannot break its export.
import numpy as np  # noqa: E402

from monitor.bundle import bundle_paths, load_bundle  # noqa: E402
from monitor.errors import BundleError  # noqa: E402
from monitor.frontend import YAMNET_FRONTEND, FrontendParams, LogMelFrontend  # noqa: E402
from monitor.runner import ModelRunner  # noqa: E402
from monitor.windows import hop_frames_for  # noqa: E402
from training.augment import spec_masks  # noqa: E402
from training.bundle_export import export_bundle  # noqa: E402
from training.bundle_files import cv_dir_for  # noqa: E402
from training.console import log  # noqa: E402
from training.datasets import DatasetError, load_audio, read_esc50  # noqa: E402
from training.distill_cli import add_distill_args  # noqa: E402
from training.evaluation.clip_accuracy import metrics, predict_int8  # noqa: E402
from training.features import ClipFeatures, compute_features, default_cache_dir, floor_db  # noqa: E402
from training.models import build_cnn, count_macs  # noqa: E402
from training.train import _schedule, ema_momentum, predict_float, set_threads  # noqa: E402
from training.train_job import (  # noqa: E402
    TrainJob,
    bundle_meta,
    check_recordings,
    describe_run,
    fresh_cv_dir,
    measure_bundle,
    plot_cv,
    rewrite_bundle_json,
    summarise_folds,
    write_report,
)

__all__ = [
    "BACKGROUND",
    "DistillConfig",
    "Source",
    "add_distill_args",
    "distill_loss",
    "make_copy",
    "pack_targets",
    "recording_sources",
    "run_distill",
    "teacher_target",
]

BACKGROUND = "background"
SAMPLE_RATE = 16000
GATE_DBFS = -70.0  # the daemon's default detection.min_level_dbfs
TEACHER_WINDOW_FRAMES = 96  # 0.975 s of the yamnet front-end
CACHE_VERSION = 1


# -- configuration ---------------------------------------------------------------------------------


@dataclass
class DistillConfig:
    """What `--teacher` adds to the CNN recipe (the `soundmon train --teacher` options).

    `teacher` is the teacher bundle's path; the rest is commented below. The waveform
    augmentation mirrors `training.augment.AugmentConfig` where it can be done on audio
    (probabilities per copy in [0, 1], (low, high) ranges drawn uniformly, dB offsets); the
    masks are applied to the student's batches only.
    """

    teacher: str = ""
    teacher_folds: str | None = None  # folder of fold<k> teacher bundles (default <teacher>_cv)
    alpha: float = 0.3  # weight of the label cross-entropy; 1 - alpha goes to the teacher
    temperature: float = 2.0  # T of the distillation loss (the module docstring)
    copies: int = 4  # augmented waveforms per source
    background: bool = True  # an 11th output trained from audio that is none of our classes
    esc50: str | None = None  # ESC-50 root: its ESC-10 clips join the sources
    recordings: str | None = None  # folder with labels.csv: stretches of the seen recordings join
    extra_weight: float = 1.0  # sampling weight of an extra source relative to a dataset clip
    # waveform augmentation (the student recipe's, where it can be done on audio)
    p_start: float = 0.3
    p_onset: float = 0.25
    onset_min_seconds: float = 0.3
    gain_db: float = 10.0
    p_mix: float = 0.5
    mix_snr_db: tuple[float, float] = (0.0, 12.0)
    p_noise: float = 0.5
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    p_speed: float = 0.3
    speed: tuple[float, float] = (0.9, 1.1)
    # the path to the microphone: a closed window, a wall or distance takes the highs off a sound
    p_lowpass: float = 0.0  # probability that a copy is heard through a low-pass filter
    lowpass_hz: tuple[float, float] = (800.0, 5000.0)  # its cutoff, drawn log-uniformly
    # student-only (per batch)
    time_masks: int = 2
    time_mask_frames: int = 40
    freq_masks: int = 2
    freq_mask_bands: int = 8

    def to_dict(self) -> dict:
        """Every field, as plain values (for the run's recorded settings)."""
        return asdict(self)

    def augment_dict(self) -> dict:
        """The fields that change the cached copies (part of their cache key)."""
        keep = ("copies", "background", "p_start", "p_onset", "onset_min_seconds", "gain_db", "p_mix",
                "mix_snr_db", "p_noise", "noise_snr_db", "p_speed", "speed")  # fmt: skip
        if self.p_lowpass:  # only when on, so the copies cached before the option keep their key
            keep += ("p_lowpass", "lowpass_hz")
        return {k: v for k, v in self.to_dict().items() if k in keep}


# -- sources ---------------------------------------------------------------------------------------


@dataclass
class Source:
    """One piece of training audio (16 kHz mono) with its label index (-1: unlabelled, the teacher's
    target only) and fold (a dataset clip's fold; a recording stretch carries its recording's,
    so it never trains that fold's model; 0 for ESC-10 clips, never held out). `extra` marks the
    extra audio (ESC-10 clips, recording stretches): a mixing partner for every fold."""

    audio: np.ndarray
    label: int
    fold: int
    extra: bool = False


def recording_sources(rec_dir: str | Path, train_folds: list[int], labels: list[str], background: int | None,
                      seconds: float = 4.0, hop: float = 2.0, margin: float = 0.5) -> list[Source]:  # fmt: skip
    """4 s stretches of the recordings of `train_folds` (the "seen" ones): a stretch wholly inside
    one labelled occurrence gets its class, one at least `margin` s away from every labelled
    occurrence gets `background` (skipped when None); stretches in between are left out."""
    rec_dir = Path(rec_dir)
    occ: dict[str, list[tuple[float, float, str]]] = {}
    fold_of: dict[str, int] = {}
    with (rec_dir / "labels.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            occ.setdefault(r["fsID"], []).append((float(r["start"]), float(r["end"]), r["class"]))
            fold_of[r["fsID"]] = int(r["fold"])
    out = []
    for fsid, spans in sorted(occ.items()):
        if fold_of[fsid] not in train_folds:
            continue  # unseen recordings are the test: never trained on
        path = next((p for p in rec_dir.glob(f"{fsid}.*") if p.suffix != ".csv"), None)
        if path is None:
            continue
        audio = load_audio(path, SAMPLE_RATE)
        n = int(seconds * SAMPLE_RATE)
        for t0 in np.arange(0.0, max(len(audio) / SAMPLE_RATE - seconds, 0.0) + 1e-9, hop):
            t1 = t0 + seconds
            inside = [c for a, b, c in spans if a <= t0 and t1 <= b and c in labels]
            near = any(t0 < b + margin and a - margin < t1 for a, b, _ in spans)
            s = int(t0 * SAMPLE_RATE)
            if inside:
                out.append(Source(audio[s : s + n].copy(), labels.index(inside[0]), fold_of[fsid], True))
            elif not near:
                lab = background if background is not None else -1
                out.append(Source(audio[s : s + n].copy(), lab, fold_of[fsid], True))
    return out


def esc10_sources(root: str | Path, labels: list[str], background: int | None) -> list[Source]:
    """ESC-10's clips (extra audio, fold 0): dog -> dog_bark, the rest -> background (or left out)."""
    ds = read_esc50(root)
    esc10 = set()
    with (Path(root) / "meta" / "esc50.csv").open(newline="") as fh:
        esc10 = {r["filename"] for r in csv.DictReader(fh) if r.get("esc10") == "True"}
    out = []
    for c in ds.clips:
        if c.path.name not in esc10:
            continue
        if c.label == "dog" and "dog_bark" in labels:
            lab = labels.index("dog_bark")
        else:
            lab = background if background is not None else -1  # -1: the teacher's target only
        out.append(Source(load_audio(c.path, SAMPLE_RATE), lab, 0, True))
    return out


# -- waveform augmentation -------------------------------------------------------------------------


def _active_power(x: np.ndarray, frame: int = 160) -> float:
    """Mean square over the 10 ms frames that are not digital silence."""
    n = len(x) // frame * frame
    if n == 0:
        return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0
    ms = np.mean(np.square(x[:n].reshape(-1, frame), dtype=np.float64), axis=1)
    live = ms[ms > 1e-10]
    return float(live.mean()) if live.size else 0.0


def _speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play `x` `factor` times faster (tempo and pitch together), by band-limited resampling."""
    from fractions import Fraction

    from scipy.signal import resample_poly

    fr = Fraction(factor).limit_denominator(40)
    return resample_poly(x, fr.denominator, fr.numerator).astype(np.float32)


def _place(x: np.ndarray, n: int, cfg: DistillConfig, rng: np.random.Generator) -> np.ndarray:
    """Put a source into an `n`-sample window: onset placement (its first part at the window's end),
    the start of the window, or a random offset / crop (time shift)."""
    out = np.zeros(n, np.float32)
    m = len(x)
    if cfg.p_onset and rng.random() < cfg.p_onset:
        lo = min(m, int(cfg.onset_min_seconds * SAMPLE_RATE), n)
        k = int(rng.integers(max(lo, 1), min(m, n) + 1))
        out[n - k :] = x[:k]
        return out
    if m >= n:
        off = 0 if rng.random() < cfg.p_start else int(rng.integers(0, m - n + 1))
        return x[off : off + n].astype(np.float32)
    off = 0 if rng.random() < cfg.p_start else int(rng.integers(0, n - m + 1))
    out[off : off + m] = x
    return out


def _noise(n: int, power: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a random spectral tilt (-15..+5 dB over the band) at mean power `power`."""
    spec = np.fft.rfft(rng.normal(0.0, 1.0, n))
    tilt_db = rng.uniform(-15.0, 5.0) * np.linspace(0.0, 1.0, len(spec))
    y = np.fft.irfft(spec * 10.0 ** (tilt_db / 20.0), n)
    return (y * math.sqrt(power / max(float(np.mean(y * y)), 1e-20))).astype(np.float32)


def _lowpass(x: np.ndarray, rng: np.random.Generator, cutoff_hz: tuple[float, float]) -> np.ndarray:
    """`x` heard through a low-pass: a Butterworth of order 2 or 4 (12 or 24 dB per octave, a pane of
    glass to a wall) with its cutoff drawn log-uniformly from `cutoff_hz`."""
    from training.lowpass import lowpass

    lo, hi = (math.log(f) for f in cutoff_hz)
    order = int(rng.choice([2, 4]))
    return lowpass(x, SAMPLE_RATE, math.exp(rng.uniform(lo, hi)), order)


def make_copy(sources: list[Source], i: int, partners: np.ndarray, n_classes: int, cfg: DistillConfig,
              rng: np.random.Generator, seconds: float = 4.0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One augmented `seconds` waveform of source `i` and its soft label (mixing partners drawn
    from `partners`)."""
    n = int(round(seconds * SAMPLE_RATE))
    src = sources[i]
    y = np.zeros(n_classes, np.float32)
    if src.label >= 0:  # -1: unlabelled audio, trained on the teacher's target only
        y[src.label] = 1.0

    def content(s: Source) -> np.ndarray:
        a = s.audio
        if cfg.p_speed and rng.random() < cfg.p_speed:
            a = _speed(a, float(rng.uniform(*cfg.speed)))
        return _place(a, n, cfg, rng)

    x = content(src)
    if cfg.p_mix and len(partners) and rng.random() < cfg.p_mix:
        k = int(partners[rng.integers(0, len(partners))])
        other = content(sources[k])
        px, po = _active_power(x), _active_power(other)
        if px > 0 and po > 0:
            snr = float(rng.uniform(*cfg.mix_snr_db))
            other = other * math.sqrt(px / po * 10.0 ** (-snr / 10.0))
            lam = 1.0 / (1.0 + 10.0 ** (snr / 10.0))  # energy share of the mixed-in source
            x = x + other
            y *= 1.0 - lam
            if sources[k].label >= 0:
                y[sources[k].label] += lam
    if cfg.p_lowpass and rng.random() < cfg.p_lowpass:  # the whole scene, before the microphone's own noise
        x = _lowpass(x, rng, cfg.lowpass_hz)
    if cfg.gain_db:
        x = x * 10.0 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 20.0)
    if cfg.p_noise and rng.random() < cfg.p_noise:
        p = _active_power(x)
        if p > 0:
            x = x + _noise(n, p * 10.0 ** (-rng.uniform(*cfg.noise_snr_db) / 10.0), rng)
    return np.clip(x, -1.0, 1.0).astype(np.float32), y


def teacher_target(window_scores: np.ndarray, levels_dbfs: np.ndarray, gate: float = GATE_DBFS) -> np.ndarray:
    """A copy's teacher target from the teacher's window scores: the mean weighted by each window's
    power over the windows the level gate lets through (all windows if it lets none through)."""
    ok = levels_dbfs >= gate
    if not ok.any():
        ok[:] = True
    w = 10.0 ** (np.clip(levels_dbfs[ok], -200.0, 0.0) / 10.0) + 1e-30
    t = (window_scores[ok] * w[:, None]).sum(0) / w.sum()
    return (t / max(float(t.sum()), 1e-12)).astype(np.float32)


# -- the copies and the teachers' scores, cached ---------------------------------------------------


class _Teachers:
    """The teacher bundles (name -> runner), all on the yamnet front-end."""

    def __init__(self, paths: dict[str, str]) -> None:
        self.runners = {}
        for name, path in paths.items():
            b = load_bundle(path)
            if b.frontend != YAMNET_FRONTEND or b.window_frames != TEACHER_WINDOW_FRAMES:
                raise BundleError(f"teacher {path}: not a 0.975 s window model on the yamnet front-end")
            self.runners[name] = ModelRunner(b, num_threads=1)
        self.fe = LogMelFrontend(YAMNET_FRONTEND)
        self.hop = hop_frames_for(0.5, YAMNET_FRONTEND)

    def targets(self, wave: np.ndarray) -> dict[str, np.ndarray]:
        lm = self.fe(wave)
        en = self.fe.frame_energy(wave)
        starts = range(0, len(lm) - TEACHER_WINDOW_FRAMES + 1, self.hop)
        ms = np.array([np.mean(en[s : s + TEACHER_WINDOW_FRAMES], dtype=np.float64) for s in starts])
        lv = np.where(ms > 1e-20, 10.0 * np.log10(np.maximum(ms, 1e-30)), -200.0)
        out = {}
        for name, r in self.runners.items():
            sc = np.stack([r.predict(lm[s : s + TEACHER_WINDOW_FRAMES]) for s in starts])
            out[name] = teacher_target(sc, lv)
        return out


_W: dict = {}  # a precompute worker's state


def _copy_worker_init(sources, partners, n_classes, cfg, teacher_paths, params, seconds) -> None:
    _W.update(sources=sources, partners=partners, n_classes=n_classes, cfg=cfg,
              teachers=_Teachers(teacher_paths), fe=LogMelFrontend(params),
              frames=params.frames_for(seconds), seconds=seconds)  # fmt: skip


def _copy_worker(job: tuple[int, int, int]) -> tuple[int, int, np.ndarray, np.ndarray, dict]:
    i, j, seed = job
    rng = np.random.default_rng([seed, i, j, 23])
    wave, y = make_copy(_W["sources"], i, _W["partners"][i], _W["n_classes"], _W["cfg"], rng, _W["seconds"])
    lm = _W["fe"](wave)[: _W["frames"]].astype(np.float16)
    return i, j, lm, y, _W["teachers"].targets(wave)


def _partners(sources: list[Source]) -> list[np.ndarray]:
    """Mixing partners of each source: its own fold's sources and the extra audio."""
    folds = np.array([s.fold for s in sources])
    extra = np.array([s.extra for s in sources])
    return [np.where((folds == s.fold) | extra)[0] for s in sources]


@dataclass
class Copies:
    """The cached training copies: student log-mel (float16 dB), soft labels, owner source, and
    one teacher target array per teacher name."""

    logmel: np.ndarray  # (N, frames, mels) float16
    labels: np.ndarray  # (N, C) float32
    owner: np.ndarray  # (N,) int
    teachers: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N, T) float32


def build_copies(sources: list[Source], n_classes: int, cfg: DistillConfig, teacher_paths: dict[str, str],
                 params: FrontendParams, cache: Path, seed: int, seconds: float = 4.0,
                 workers: int = 2, key_extra: dict | None = None) -> Copies:  # fmt: skip
    """`cfg.copies` copies of every source, with the teachers' targets; read from `cache` if there."""
    h = hashlib.sha1()
    h.update(json.dumps({"v": CACHE_VERSION, "aug": cfg.augment_dict(), "seed": seed, "seconds": seconds,
                         "params": params.to_dict(), "n": len(sources), "extra": key_extra or {}},
                        sort_keys=True, default=str).encode())  # fmt: skip
    for s in sources:
        h.update(np.ascontiguousarray(s.audio[:: 997]).tobytes())
        h.update(f"{s.label},{s.fold},{s.extra}".encode())
    base_key = h.hexdigest()[:16]
    d = cache / "distill" / base_key
    d.mkdir(parents=True, exist_ok=True)
    need = {}
    for name, path in teacher_paths.items():
        tfl, _ = bundle_paths(path)
        tkey = hashlib.sha1(Path(tfl).read_bytes()).hexdigest()[:12]
        if not (d / f"teacher_{tkey}.npy").is_file():
            need[name] = path
        teacher_paths[name] = path
    base_ok = all((d / f).is_file() for f in ("logmel.npy", "labels.npy", "owner.npy"))
    if not base_ok:
        need = dict(teacher_paths)
    if need:
        jobs = [(i, j, seed) for i in range(len(sources)) for j in range(cfg.copies)]
        frames = params.frames_for(seconds)
        lm = np.lib.format.open_memmap(d / "logmel.tmp.npy", "w+", np.float16, (len(jobs), frames, params.n_mels)) \
            if not base_ok else None  # fmt: skip
        labels = np.zeros((len(jobs), n_classes), np.float32)
        owner = np.zeros(len(jobs), np.int64)
        tt = {name: None for name in need}
        log(f"distill: {len(jobs)} augmented copies of {len(sources)} sources, teachers {sorted(need)} "
            f"({workers} processes)")  # fmt: skip
        t0 = time.perf_counter()
        args = (sources, _partners(sources), n_classes, cfg, need, params, seconds)
        if workers <= 1:
            _copy_worker_init(*args)
            it = map(_copy_worker, jobs)
            pool = None
        else:
            pool = mp.get_context("spawn").Pool(workers, initializer=_copy_worker_init, initargs=args)
            it = pool.imap(_copy_worker, jobs, chunksize=16)
        for done, (i, j, x, y, t) in enumerate(it):
            r = i * cfg.copies + j
            if lm is not None:
                lm[r] = x
            labels[r] = y
            owner[r] = i
            for name, v in t.items():
                if tt[name] is None:
                    tt[name] = np.zeros((len(jobs), len(v)), np.float32)
                tt[name][r] = v
            if (done + 1) % 2000 == 0:
                log(f"distill: {done + 1}/{len(jobs)} copies ({time.perf_counter() - t0:.0f} s)")
        if pool is not None:
            pool.close()
            pool.join()
        if lm is not None:
            lm.flush()
            del lm
            os.replace(d / "logmel.tmp.npy", d / "logmel.npy")
            np.save(d / "labels.npy", labels)
            np.save(d / "owner.npy", owner)
        for name, path in need.items():
            tkey = hashlib.sha1(bundle_paths(path)[0].read_bytes()).hexdigest()[:12]
            np.save(d / f"teacher_{tkey}.npy", tt[name])
        log(f"distill: copies and teacher targets in {time.perf_counter() - t0:.0f} s -> {d}")
    teachers = {}
    for name, path in teacher_paths.items():
        tkey = hashlib.sha1(bundle_paths(path)[0].read_bytes()).hexdigest()[:12]
        teachers[name] = np.load(d / f"teacher_{tkey}.npy")
    return Copies(np.load(d / "logmel.npy", mmap_mode="r"), np.load(d / "labels.npy"),
                  np.load(d / "owner.npy"), teachers)  # fmt: skip


# -- the loss --------------------------------------------------------------------------------------


def pack_targets(labels: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """y_true of `distill_loss`: [soft labels (C), teacher distribution over its first T labels]."""
    return np.concatenate([labels, teacher], axis=1).astype(np.float32)


def distill_loss(n_classes: int, n_teacher: int, alpha: float, temperature: float, label_smoothing: float = 0.0):
    """Keras loss on (packed targets, student softmax): alpha * CE(labels) + (1 - alpha) * T^2 *
    KL(teacher_T || student_T), the student's distribution renormalised over the teacher's labels
    (the first `n_teacher` outputs); teacher_T = softmax(log teacher / T)."""
    import keras
    from keras import ops

    eps = 1e-7

    def loss(y_true, y_pred):
        y = y_true[:, :n_classes]
        t = y_true[:, n_classes : n_classes + n_teacher]
        if label_smoothing:  # (an unlabelled example's all-zero labels stay zero)
            y = y * (1.0 - label_smoothing) + label_smoothing / n_classes * ops.sum(y, axis=-1, keepdims=True)
        logp = ops.log(ops.clip(y_pred, eps, 1.0))
        ce = -ops.sum(y * logp, axis=-1)
        ls = logp[:, :n_teacher] / temperature
        ls = ls - ops.logsumexp(ls, axis=-1, keepdims=True)
        lt = ops.log(ops.clip(t, eps, 1.0)) / temperature
        lt = lt - ops.logsumexp(lt, axis=-1, keepdims=True)
        kl = ops.sum(ops.exp(lt) * (lt - ls), axis=-1)
        return alpha * ce + (1.0 - alpha) * temperature**2 * kl

    loss.__name__ = "distill_loss"
    del keras
    return loss


def distill_loss_np(y: np.ndarray, t: np.ndarray, p: np.ndarray, alpha: float, temperature: float) -> np.ndarray:
    """The same loss in numpy (per example), for tests."""
    logp = np.log(np.clip(p, 1e-7, 1.0))
    ce = -(y * logp).sum(-1)
    nt = t.shape[1]
    ls = logp[:, :nt] / temperature
    ls = ls - np.log(np.exp(ls).sum(-1, keepdims=True))
    lt = np.log(np.clip(t, 1e-7, 1.0)) / temperature
    lt = lt - np.log(np.exp(lt).sum(-1, keepdims=True))
    kl = (np.exp(lt) * (lt - ls)).sum(-1)
    return alpha * ce + (1.0 - alpha) * temperature**2 * kl


# -- training --------------------------------------------------------------------------------------


def _mask(xs: np.ndarray, cfg: DistillConfig, rng: np.random.Generator) -> None:
    """SpecAugment masks (to the normalised mean, 0), in place: student-only augmentation."""
    spec_masks(xs, cfg, rng)


def copy_norm(logmel: np.ndarray, rows: np.ndarray, floor: float, n: int = 600, seed: int = 0) -> tuple[float, float]:
    """Mean and std (dB) of the non-silent frames of up to `n` copies."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(rows, size=min(n, len(rows)), replace=False))
    x = np.asarray(logmel[pick], dtype=np.float64)
    x = x[x > floor + 1.0]
    return float(x.mean()), float(max(x.std(), 1e-3))


def _batches_class():
    import keras

    class Batches(keras.utils.PyDataset):
        """One copy of every training source per epoch (a different one each epoch), masks on top."""

        def __init__(self, logmel, y_packed, by_source: list[np.ndarray], norm, dcfg: DistillConfig,
                     batch_size: int, seed: int) -> None:  # fmt: skip
            super().__init__(workers=2, use_multiprocessing=False, max_queue_size=6)
            self.logmel, self.y, self.by_source = logmel, y_packed, by_source
            self.norm, self.dcfg, self.bs, self.seed = norm, dcfg, batch_size, seed
            self.epoch = 0
            self._order()

        def _order(self) -> None:
            rng = np.random.default_rng([self.seed, self.epoch, 31])
            perm = rng.permutation(len(self.by_source))
            self.rows = np.array([self.by_source[s][rng.integers(0, len(self.by_source[s]))] for s in perm])

        def __len__(self) -> int:
            return max(1, len(self.rows) // self.bs)

        def __getitem__(self, i: int):
            rows = self.rows[i * self.bs : (i + 1) * self.bs]
            order = np.argsort(rows)  # sorted reads from the memory map
            x = np.asarray(self.logmel[rows[order]], dtype=np.float32)
            x = (x - self.norm[0]) / self.norm[1]
            _mask(x, self.dcfg, np.random.default_rng([self.seed, self.epoch, int(i), 37]))
            return x[..., None], self.y[rows[order]]

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self._order()

    return Batches


@dataclass
class _Task:
    """Train one student (CV fold `fold`, or the final model when fold is None) and export it."""

    fold: int | None
    cache: str  # the copies' cache folder
    teacher_file: str  # teacher targets .npy for this task
    source_folds: np.ndarray
    labels: list[str]
    n_teacher: int
    cfg: object  # TrainConfig
    dcfg: DistillConfig
    params: FrontendParams
    out_base: str
    meta: dict
    test: tuple[list[ClipFeatures], np.ndarray] | None = None

    def __call__(self) -> dict:
        import keras

        cfg, dcfg, params = self.cfg, self.dcfg, self.params
        name = "final model" if self.fold is None else f"CV fold {self.fold}"
        keras.utils.set_random_seed(cfg.seed)
        d = Path(self.cache)
        logmel = np.load(d / "logmel.npy", mmap_mode="r")
        labels = np.load(d / "labels.npy")[:, : len(self.labels)]  # without background: its column dropped
        owner = np.load(d / "owner.npy")
        teacher = np.load(self.teacher_file)
        train_src = np.where(self.source_folds != (self.fold if self.fold is not None else -1))[0]
        rows = np.where(np.isin(owner, train_src))[0]
        by_source = [np.where(owner == s)[0] for s in train_src]
        floor = floor_db(params)
        norm = copy_norm(logmel, rows, floor, seed=cfg.seed)
        n_classes = len(self.labels)
        y_packed = pack_targets(labels, teacher)
        data = _batches_class()(logmel, y_packed, by_source, norm, dcfg, cfg.batch_size, cfg.seed)
        frames = params.frames_for(cfg.window_seconds)
        model = build_cnn(n_classes, frames, params.n_mels, cfg.arch, cfg.dropout)
        momentum = ema_momentum(cfg.ema, len(data) * cfg.epochs)
        opt = keras.optimizers.AdamW(_schedule(cfg, len(data), cfg.epochs, cfg.lr), weight_decay=cfg.weight_decay,
                                     use_ema=momentum > 0, ema_momentum=momentum or 0.99)  # fmt: skip
        model.compile(optimizer=opt, loss=distill_loss(n_classes, self.n_teacher, dcfg.alpha, dcfg.temperature,
                                                       cfg.label_smoothing))  # fmt: skip
        log(f"{name}: {len(train_src)} sources, {len(rows)} copies, {len(data)} batches per epoch, {cfg.epochs} epochs")
        epoch_s: list[float] = []
        losses: list[float] = []

        class _Log(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                epoch_s.append(time.perf_counter() - self.t0)
                losses.append(float((logs or {}).get("loss", float("nan"))))
                if epoch == 0 or (epoch + 1) % 5 == 0:
                    log(f"{name}: epoch {epoch + 1}/{cfg.epochs}, loss {losses[-1]:.3f}, {epoch_s[-1]:.0f} s")

        t0 = time.perf_counter()
        model.fit(data, epochs=cfg.epochs, verbose=0, callbacks=[_Log()], shuffle=False)
        train_s = time.perf_counter() - t0
        # representative windows for the int8 export: copies as ClipFeatures (whole windows)
        rng = np.random.default_rng(cfg.seed)
        rep_rows = np.sort(rng.choice(rows, size=min(400, len(rows)), replace=False))
        rep = [ClipFeatures(np.asarray(logmel[r], np.float32), frames, cfg.window_seconds) for r in rep_rows]
        rep_y = labels[rep_rows].argmax(1)
        bundle, nbytes = export_bundle(model, rep, rep_y, n_classes, norm, params, self.out_base, self.labels, self.meta,
                                       cfg, keep_weights=True)  # fmt: skip
        finish_bundle(self.out_base, self.labels)
        # the history in `training.train.History`'s form (no validation points: the folds are scored once, at the end)
        history = {"epochs": list(range(1, len(losses) + 1)), "train_loss": losses, "val_epochs": [], "val_acc": [],
                   "val_macro": [], "epoch_seconds": epoch_s}  # fmt: skip
        result = {"fold": self.fold, "train_seconds": train_s, "seconds_per_epoch": float(np.median(epoch_s)),
                  "final_loss": losses[-1], "history": history, "tflite_bytes": nbytes, "bundle": self.out_base,
                  "train_sources": int(len(train_src)), "train_copies": int(len(rows)), "norm": list(norm),
                  "params": int(model.count_params()), "macs_per_window": count_macs(model)}  # fmt: skip
        if self.test is not None:
            feats, y = self.test
            fg = [i for i, lab in enumerate(self.labels) if lab != BACKGROUND]
            sf = predict_float(model, feats, norm, params, cfg.window_seconds, cfg.hop_seconds)
            sq = predict_int8(load_bundle(self.out_base), feats, cfg.hop_seconds, progress=False)
            # the fold's entry in `soundmon train`'s report (training/fold_tasks.py), over our classes only
            result["entry"] = {"fold": self.fold, "n_clips": len(y), "train_clips": int(len(rows)), "train_seconds": train_s,
                               "float": metrics(y, sf[:, fg], [self.labels[i] for i in fg]),
                               "int8": metrics(y, sq[:, fg], [self.labels[i] for i in fg]),
                               "int8_float_agreement": float(np.mean(sf[:, fg].argmax(1) == sq[:, fg].argmax(1))),
                               "int8_all_outputs_accuracy": float(np.mean(sq.argmax(1) == np.asarray(fg)[y]))}  # fmt: skip
            result["scores"] = (sf[:, fg], sq[:, fg])
            e = result["entry"]
            log(f"{name}: float {100 * e['float']['accuracy']:.1f}%, int8 {100 * e['int8']['accuracy']:.1f}% "
                f"(argmax over all outputs incl. background: {100 * e['int8_all_outputs_accuracy']:.1f}%), "
                f"{train_s / 60:.1f} min")  # fmt: skip
        return result


def finish_bundle(base: str | Path, labels: list[str]) -> None:
    """Name the labels the daemon reports (`"watch"`): every label but `background`."""
    if BACKGROUND not in labels:
        return
    _, json_path = bundle_paths(base)
    data = json.loads(json_path.read_text())
    data["watch"] = [lab for lab in labels if lab != BACKGROUND]
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    load_bundle(base)


def _worker_init(threads: int) -> None:
    set_threads(threads)


# -- the job ---------------------------------------------------------------------------------------


def teacher_fold_path(teacher: str, teacher_folds: str | None, fold: int) -> str:
    """Fold k's teacher bundle, checked not to have trained on fold k."""
    base = Path(teacher_folds) if teacher_folds else cv_dir_for(teacher)
    path = base / f"fold{fold}"
    try:
        b = load_bundle(path)
    except BundleError as exc:
        raise BundleError(f"CV fold {fold} needs a teacher that never heard fold {fold} ({path}): {exc}. Make them "
                          f"with `soundmon train --dataset ... --cv {fold} --backbone yamnet --out <teacher>` "
                          "and pass --teacher-folds <teacher>_cv") from None  # fmt: skip
    trained = (b.meta.get("cv") or {}).get("trained_on_folds") or (b.meta.get("data") or {}).get("folds")
    if trained is None or fold in trained:
        raise BundleError(f"teacher {path} {'trained on' if trained else 'does not say whether it heard'} fold {fold}")
    return str(path)


def run_distill(job: TrainJob, dcfg: DistillConfig) -> dict:
    """Sources, copies and teacher targets, then the CV folds and the final model (side by side in
    `job.jobs` processes); writes `<out>.tflite/.json/.weights.h5`, `<out>_cv/fold<k>.*`, and the
    report, plots and model card as `soundmon train` does without a teacher (training/train_job.py),
    with the distillation recipe in the report's `distill`."""
    from concurrent.futures import ProcessPoolExecutor

    t_start = time.perf_counter()
    dataset, cfg, out, cv_folds, cache_dir, jobs = job.dataset, job.cfg, job.out, job.cv_folds, job.cache_dir, job.jobs
    params = FrontendParams()
    teacher_bundle = load_bundle(dcfg.teacher)
    t_labels = list(teacher_bundle.labels)
    if t_labels != list(dataset.labels):
        raise DatasetError(f"teacher {dcfg.teacher} labels {t_labels} differ from the dataset's {dataset.labels}")
    labels = t_labels + ([BACKGROUND] if dcfg.background else [])
    # The copies always carry a background column (extra audio that is none of our classes is
    # labelled background there); without a background output the task drops that column, which
    # leaves such audio the teacher's target only: one cache serves both.
    cached_labels = t_labels + [BACKGROUND]
    bg = cached_labels.index(BACKGROUND)
    log(dataset.summary())
    sources = [Source(load_audio(c.path, SAMPLE_RATE), cached_labels.index(c.label), int(c.fold)) for c in dataset.clips]
    n_data = len(sources)
    if dcfg.esc50:
        extra = esc10_sources(dcfg.esc50, cached_labels, bg)
        log(f"distill: {len(extra)} ESC-10 clips ({sum(s.label == bg for s in extra)} background)")
        sources += extra
    if dcfg.recordings:
        extra = recording_sources(dcfg.recordings, dataset.folds, cached_labels, bg)
        log(f"distill: {len(extra)} stretches of the seen recordings ({sum(s.label == bg for s in extra)} background)")
        sources += extra
    teachers = {"final": dcfg.teacher}
    for k in cv_folds or []:
        teachers[f"fold{k}"] = teacher_fold_path(dcfg.teacher, dcfg.teacher_folds, k)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    copies = build_copies(sources, len(cached_labels), replace(dcfg, background=True), dict(teachers), params, cache, cfg.seed,
                          cfg.window_seconds, workers=max(1, os.cpu_count() or 1))  # fmt: skip
    # the folder and teacher files the tasks read
    d = Path(copies.logmel.filename).parent  # type: ignore[attr-defined]
    tfile = {name: str(d / f"teacher_{hashlib.sha1(bundle_paths(p)[0].read_bytes()).hexdigest()[:12]}.npy")
             for name, p in teachers.items()}  # fmt: skip
    del copies
    source_folds = np.array([s.fold for s in sources])
    data_meta = {"name": dataset.name, "root": str(dataset.root), "format": dataset.format}
    common = {"model": {"arch": cfg.arch}, "training": cfg.to_dict(),
              "distill": {**dcfg.to_dict(), "teachers": teachers, "sources": len(sources), "dataset_clips": n_data}}  # fmt: skip
    tasks = []
    out.parent.mkdir(parents=True, exist_ok=True)
    cv_dir = None
    if cv_folds:
        cv_dir = fresh_cv_dir(out)  # an earlier run's folds must not mix with these
        feats = compute_features(dataset.clips, params, cfg.window_seconds, cache_dir, None, False)
        y = dataset.y()
        for k in cv_folds:
            te = [i for i, c in enumerate(dataset.clips) if c.fold == k]
            trained = sorted({int(c.fold) for c in dataset.clips if c.fold != k})
            meta = {**common, "cv": {"held_out_fold": k, "trained_on_folds": trained}, "data": {**data_meta, "folds": trained}}
            tasks.append(_Task(k, str(d), tfile[f"fold{k}"], source_folds, labels, len(t_labels), cfg, dcfg, params,
                               str(cv_dir / f"fold{k}"), meta, ([feats[i] for i in te], y[te])))  # fmt: skip
    final_meta = {**common, "data": {**data_meta, "folds": dataset.folds}}
    tasks.insert(0, _Task(None, str(d), tfile["final"], source_folds, labels, len(t_labels), cfg, dcfg, params,
                          str(out), final_meta))  # fmt: skip
    if jobs <= 1 or len(tasks) == 1:
        results = [t() for t in tasks]
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                 initargs=(threads,)) as pool:  # fmt: skip
            futures = [pool.submit(t) for t in tasks]
            results = [f.result() for f in futures]
    report = _report(job, common["distill"], labels, results, t_start)
    log(f"distilled {len(sources)} sources from {dcfg.teacher}; total {report['cost']['total_seconds'] / 60:.1f} min")
    return report


def _report(job: TrainJob, distill_meta: dict, outputs: list[str], results: list[dict], t_start: float) -> dict:
    """`soundmon train`'s report for a distilled run: CV folds pooled and plotted, the final
    bundle's latency and streaming check, its JSON's metrics, `<name>_metrics.json` and the card."""
    ds, params = job.dataset, FrontendParams()
    y, folds = ds.y(), np.array([c.fold for c in ds.clips])
    report = describe_run(job, params, y, folds)
    final = results[0]
    report["outputs"] = outputs
    report["distill"] = {**distill_meta, "train_copies": final["train_copies"], "final_loss": final["final_loss"]}
    report_dir = job.report_dir or job.out.parent
    report_dir.mkdir(parents=True, exist_ok=True)
    if job.cv_folds:
        folds_out = [(r["entry"], r["history"], *r["scores"], None) for r in results[1:]]
        report["cv"] = summarise_folds(job.cv_folds, folds_out, y, folds, ds.labels)
        plot_cv(report, report_dir, job.cv_folds, ds.labels)
        s = report["cv"]["summary"]
        log(f"CV mean accuracy: float {100 * s['float_accuracy_mean']:.1f}%, int8 {100 * s['int8_accuracy_mean']:.1f}%")
    report["norm"] = final["norm"]
    report["model"] = {"arch": job.cfg.arch, "params": final["params"], "macs_per_window": final["macs_per_window"]}
    report["cost"] = {"train_clips": final["train_copies"], "final_train_seconds": final["train_seconds"],
                      "seconds_per_epoch": final["seconds_per_epoch"], "parallel_jobs": job.jobs}  # fmt: skip
    measure_bundle(report, job, load_bundle(job.out), final["tflite_bytes"], t_start)
    data = rewrite_bundle_json(job.out, bundle_meta(report), report, keys=("model", "latency", "cost", "metrics"))
    if job.recordings:
        check_recordings(report, job, data)
    write_report(report, job, report_dir, final["tflite_bytes"])
    return report


def student_masks(text: str) -> dict[str, int]:
    """`--student-masks TIME,FREQ` as DistillConfig fields; DatasetError (one line) if malformed."""
    try:
        time_masks, freq_masks = (int(v) for v in str(text).split(","))
    except ValueError:
        raise DatasetError(f"--student-masks: expected TIME,FREQ counts such as 2,2 or 0,0, got {text!r}") from None
    if time_masks < 0 or freq_masks < 0:
        raise DatasetError(f"--student-masks: counts must be >= 0, got {text!r}")
    return {"time_masks": time_masks, "freq_masks": freq_masks}


def train_distill(job: TrainJob, args) -> int:
    """`soundmon train --teacher`: the CLI's entry (`job` built as for the CNN, the teacher options in `args`)."""
    dcfg = DistillConfig(teacher=args.teacher, teacher_folds=args.teacher_folds, alpha=args.distill_alpha,
                         temperature=args.temperature, copies=args.distill_copies, background=not args.no_background,
                         esc50=args.extra_esc50, recordings=args.extra_recordings,
                         p_lowpass=args.distill_lowpass)  # fmt: skip
    if not 0.0 <= dcfg.alpha <= 1.0 or dcfg.temperature <= 0 or dcfg.copies < 1:
        raise DatasetError("--distill-alpha must be in [0, 1], --temperature > 0, --distill-copies >= 1")
    if not 0.0 <= dcfg.p_lowpass <= 1.0:
        raise DatasetError(f"--distill-lowpass must be a probability in [0, 1], got {dcfg.p_lowpass}")
    dcfg = replace(dcfg, **student_masks(args.student_masks))
    if args.init_from:
        raise DatasetError("--teacher does not take --init-from")
    run_distill(job, dcfg)
    return 0
