"""Window accuracy on full-length recordings with located labels (../shared/data/recordings).

Each recording goes through the daemon's window rule (`monitor.windows.file_windows`, 4 s windows
every 0.5 s; the streaming pipeline yields the same windows) and the int8 model via
`monitor.runner.ModelRunner`. A window counts as labelled when at least half of it lies inside a
labelled occurrence (or, for an occurrence shorter than the window, at least half of the occurrence
lies inside the window); we report how often its top label is that occurrence's class, per recording
and overall, separately for recordings whose clips were in the training folds and for those that
were not: a recording is seen when its fsID is the source of a clip the model was trained on
(`labelled_recordings.training_fsids`), not by its fold (../shared holds folds 1-9, some of them
partly).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monitor.bundle import bundle_paths, load_bundle
from monitor.frontend import LogMelFrontend
from monitor.runner import ModelRunner
from monitor.windows import file_windows
from training.datasets import load_audio
from training.evaluation.labelled_recordings import read_occurrences, training_fsids

__all__ = ["window_accuracy_on_recordings"]


def window_accuracy_on_recordings(
    model: str | Path, rec_dir: str | Path, train_folds=(1, 2, 3, 4), hop: float = 0.5
) -> dict:
    """Share of labelled windows whose top label is their occurrence's class: per recording,
    overall, and split into recordings the bundle heard in training and did not."""
    rec_dir = Path(rec_dir)
    occ, folds = read_occurrences(rec_dir)
    bundle = load_bundle(model)
    seen_ids = training_fsids(bundle_paths(model)[1])
    runner = ModelRunner(bundle, num_threads=1)
    fe = LogMelFrontend(bundle.frontend)
    per_rec = []
    for fsid, events in sorted(occ.items()):
        path = next((p for p in rec_dir.glob(f"{fsid}.*") if p.suffix != ".csv"), None)
        if path is None:
            continue
        wins = file_windows(
            load_audio(path, bundle.frontend.sample_rate), fe, bundle.window_seconds, hop
        )
        scores = np.stack([runner.predict(w) for w in wins])
        n_ok = n_all = 0
        for i, s in enumerate(scores):
            t0, t1 = i * hop, i * hop + bundle.window_seconds
            for a, b, cls in events:
                need = min(bundle.window_seconds, b - a) / 2
                if cls in bundle.labels and min(t1, b) - max(t0, a) >= need:
                    n_all += 1
                    n_ok += int(bundle.labels[int(s.argmax())] == cls)
                    break
        per_rec.append(
            {
                "fsID": fsid,
                "fold": folds[fsid],
                "class": events[0][2],
                "seen_in_training": (folds[fsid] in set(train_folds)) if seen_ids is None else fsid in seen_ids,
                "labelled_windows": n_all,
                "correct": n_ok,
                "accuracy": n_ok / n_all if n_all else None,
            }
        )

    def agg(rows):
        n = sum(r["labelled_windows"] for r in rows)
        c = sum(r["correct"] for r in rows)
        recs = [r["accuracy"] for r in rows if r["accuracy"] is not None]
        return {
            "recordings": len(rows),
            "windows": n,
            "window_accuracy": c / n if n else None,
            "mean_recording_accuracy": float(np.mean(recs)) if recs else None,
        }

    return {
        "model": str(model),
        "recordings_dir": str(rec_dir),
        "hop_seconds": hop,
        "all": agg(per_rec),
        "unseen": agg([r for r in per_rec if not r["seen_in_training"]]),
        "seen": agg([r for r in per_rec if r["seen_in_training"]]),
        "per_recording": per_rec,
    }
