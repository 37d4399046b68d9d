"""Log-mel features through `monitor`'s batch front-end, computed in parallel and cached on disk.

For every clip the cache holds the log-mel of the clip *as the daemon's file rule sees it*: the
audio zero-padded at its end to at least one window (`monitor.windows.pad_to_window`, placement
"start") and passed through `monitor.frontend.LogMelFrontend`, plus `n_valid`, the number of
frames that lie wholly inside the real audio. Evaluation slices the analysis windows out of it
exactly as `monitor.windows.file_windows` does (tested equal); training takes the `n_valid`
real frames and places them in a window itself (augmentation).

Cache key: the resolved file path, its size and modification time, the front-end parameters,
the window length and a format version, so a changed file or front-end never reads stale data.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from monitor.frontend import FrontendParams, LogMelFrontend, frame_count
from monitor.windows import hop_frames_for, pad_to_window
from training.datasets import Clip, load_audio

__all__ = [
    "CACHE_VERSION",
    "ClipFeatures",
    "cache_key",
    "clip_windows",
    "compute_features",
    "default_cache_dir",
    "floor_db",
]

CACHE_VERSION = 2


def default_cache_dir() -> Path:
    env = os.environ.get("SOUNDMON_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "soundmon" / "features"


def floor_db(params: FrontendParams) -> float:
    """The dB value of digital silence with this front-end (-100 dB with the defaults)."""
    return float(10.0 * np.log10(params.amin) - 10.0 * np.log10(max(params.ref, params.amin)))


@dataclass
class ClipFeatures:
    """One clip's cached log-mel features, what training and evaluation read instead of audio."""

    logmel: np.ndarray  # (frames >= window_frames, n_mels) float32: the clip padded to one window
    n_valid: int  # frames wholly inside the real audio
    duration: float  # seconds of real audio


def cache_key(path: Path, params: FrontendParams, window_seconds: float) -> str:
    path = Path(path).resolve()
    st = path.stat()
    blob = json.dumps(
        {
            "v": CACHE_VERSION,
            "path": str(path),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "frontend": params.to_dict(),
            "window_seconds": window_seconds,
        },
        sort_keys=True,
    )
    return hashlib.sha1(blob.encode()).hexdigest()


def _compute_one(path: Path, params: FrontendParams, window_seconds: float) -> ClipFeatures:
    audio = load_audio(path, params.sample_rate)
    padded = pad_to_window(audio, window_seconds, params.sample_rate)
    logmel = LogMelFrontend(params)(padded)
    n_valid = frame_count(len(audio), params)
    return ClipFeatures(logmel.astype(np.float32), int(n_valid), len(audio) / params.sample_rate)


def _cache_file(cache_dir: Path, key: str) -> Path:
    return cache_dir / key[:2] / f"{key}.npy"


# One .npy per clip (fast to read: no zip container): the log-mel frames plus one trailer row
# holding n_valid and the duration (both exact in float32 for any realistic clip).


def _load_cached(file: Path) -> ClipFeatures | None:
    try:
        arr = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if arr.ndim != 2 or len(arr) < 2:
        return None
    return ClipFeatures(arr[:-1], int(arr[-1, 0]), float(arr[-1, 1]))


def _store(file: Path, feats: ClipFeatures) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    trailer = np.zeros((1, feats.logmel.shape[1]), dtype=np.float32)
    trailer[0, 0] = feats.n_valid
    trailer[0, 1] = feats.duration
    tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, np.concatenate([feats.logmel.astype(np.float32), trailer]))
    os.replace(tmp, file)


def _worker(job: tuple[str, dict, float, str | None, str | None]) -> tuple[str, ClipFeatures | str]:
    path, pdict, window_seconds, cache_dir, key = job
    try:
        feats = _compute_one(Path(path), FrontendParams(**pdict), window_seconds)
    except Exception as exc:  # reported by the parent with the file name
        return path, f"{type(exc).__name__}: {exc}"
    if cache_dir and key:
        _store(_cache_file(Path(cache_dir), key), feats)
    return path, feats


def compute_features(
    clips: list[Clip],
    params: FrontendParams | None = None,
    window_seconds: float = 4.0,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    use_cache: bool = True,
) -> list[ClipFeatures]:
    """Features for every clip, in order; cached files are read, the rest computed in parallel."""
    params = params or FrontendParams()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    out: list[ClipFeatures | None] = [None] * len(clips)
    todo: list[tuple[int, str]] = []
    for i, clip in enumerate(clips):
        key = cache_key(clip.path, params, window_seconds)
        if use_cache:
            hit = _load_cached(_cache_file(cache, key))
            if hit is not None:
                out[i] = hit
                continue
        todo.append((i, key))
    if todo:
        workers = workers if workers is not None else (os.cpu_count() or 1)
        workers = max(1, min(workers, len(todo)))
        jobs = [
            (
                str(clips[i].path),
                params.to_dict(),
                window_seconds,
                str(cache) if use_cache else None,
                key,
            )
            for i, key in todo
        ]
        bar = tqdm(total=len(jobs), desc="log-mel features", unit="clip", disable=not progress)
        index = {str(clips[i].path): i for i, _ in todo}
        errors = []
        if workers == 1:
            results = map(_worker, jobs)
            for path, res in results:
                _collect(out, index, path, res, errors)
                bar.update()
        else:
            # spawn, not fork: the parent may already hold TensorFlow's threads.
            with mp.get_context("spawn").Pool(workers) as pool:
                for path, res in pool.imap_unordered(_worker, jobs, chunksize=8):
                    _collect(out, index, path, res, errors)
                    bar.update()
        bar.close()
        if errors:
            from monitor.errors import AudioFileError

            raise AudioFileError(f"{len(errors)} file(s) could not be read; first: {errors[0]}")
    return out  # type: ignore[return-value]


def _collect(out, index, path, res, errors) -> None:
    if isinstance(res, str):
        errors.append(f"{path}: {res}")
    else:
        out[index[path]] = res


def clip_windows(
    feats: ClipFeatures, params: FrontendParams, window_seconds: float, hop_seconds: float
) -> np.ndarray:
    """The analysis windows of a cached clip: identical to `monitor.windows.file_windows` on its audio."""
    wf = params.frames_for(window_seconds)
    hop = hop_frames_for(hop_seconds, params)
    starts = range(0, len(feats.logmel) - wf + 1, hop)
    return np.stack([feats.logmel[s : s + wf] for s in starts]).astype(np.float32)
