"""Evaluation: clip scores through the daemon's own window rule and runner; metrics, tables, plots.

Int8 scores always go through `monitor.runner.ModelRunner` (the daemon's runner) on the windows
of `monitor.windows.file_windows` (cached, identical); a clip's score is the mean of its window
scores, or their max for a bundle whose `placement.clip_score` says so, as `soundmon classify`
computes it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from monitor.bundle import ModelBundle
from monitor.classify import clip_score_rule
from monitor.runner import ModelRunner
from training.features import ClipFeatures, clip_windows

__all__ = [
    "confusion",
    "measure_latency",
    "measure_stream_latency",
    "metrics",
    "per_class_table",
    "plot_confusion",
    "plot_learning_curve",
    "predict_int8",
    "write_metrics",
]


def predict_int8(
    bundle: ModelBundle,
    feats: list[ClipFeatures],
    hop_seconds: float = 0.5,
    progress: bool = True,
    threads: int = 1,
    clip_score: str | None = None,
) -> np.ndarray:
    """Clip scores (n_clips, n_labels) of the int8 model via ModelRunner: the mean over a clip's
    windows, or their max, as `clip_score` says (default: the bundle's `placement.clip_score`,
    the rule `soundmon classify` applies, so the figures are what classify gives)."""
    rule = clip_score or clip_score_rule(bundle)
    reduce = np.max if rule == "max" else np.mean
    runner = ModelRunner(bundle, num_threads=threads)
    out = np.zeros((len(feats), len(bundle.labels)), dtype=np.float32)
    for i, f in enumerate(tqdm(feats, desc="int8 eval", unit="clip", disable=not progress)):
        wins = clip_windows(f, bundle.frontend, bundle.window_seconds, hop_seconds)
        out[i] = reduce([runner.predict(w) for w in wins], axis=0)
    return out


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


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def metrics(y_true: np.ndarray, scores: np.ndarray, labels: list[str]) -> dict:
    """Overall accuracy, macro accuracy (mean of per-class accuracies), per-class, confusion."""
    y_true = np.asarray(y_true)
    pred = scores.argmax(1)
    cm = confusion(y_true, pred, len(labels))
    per = {}
    for c, lab in enumerate(labels):
        n = int(cm[c].sum())
        if n:
            per[lab] = {"n": n, "correct": int(cm[c, c]), "accuracy": float(cm[c, c] / n)}
    return {
        "n_clips": int(len(y_true)),
        "accuracy": float(np.mean(pred == y_true)) if len(y_true) else float("nan"),
        "macro_accuracy": float(np.mean([v["accuracy"] for v in per.values()]))
        if per
        else float("nan"),
        "per_class": per,
        "confusion": cm.tolist(),
        "labels": list(labels),
    }


def per_class_table(columns: dict[str, dict], labels: list[str]) -> str:
    """Markdown table: one row per class, one column per metrics dict (plus overall and macro)."""
    names = list(columns)
    lines = ["| class | n | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    first = columns[names[0]]
    for lab in labels:
        if lab not in first["per_class"]:
            continue
        cells = [
            f"{100 * m['per_class'][lab]['accuracy']:.1f}" if lab in m["per_class"] else "-"
            for m in columns.values()
        ]
        lines.append(f"| {lab} | {first['per_class'][lab]['n']} | " + " | ".join(cells) + " |")
    lines.append(
        "| **accuracy** | "
        + f"{first['n_clips']} | "
        + " | ".join(f"**{100 * m['accuracy']:.1f}**" for m in columns.values())
        + " |"
    )
    lines.append(
        "| **macro accuracy** | | "
        + " | ".join(f"**{100 * m['macro_accuracy']:.1f}**" for m in columns.values())
        + " |"
    )
    return "\n".join(lines)


def plot_confusion(cm: np.ndarray, labels: list[str], path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    rows = cm.sum(1, keepdims=True).clip(min=1)
    frac = cm / rows
    fig, ax = plt.subplots(figsize=(8, 7), dpi=100)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if frac[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (clip counts; colour = row fraction)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_learning_curve(histories: dict[str, dict], path: str | Path, title: str = "") -> None:
    """Training loss and held-out accuracy per epoch, one line per fold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for name, h in histories.items():
        a1.plot(h["epochs"], h["train_loss"], label=name)
        if h.get("val_epochs"):
            a2.plot(h["val_epochs"], [100 * v for v in h["val_acc"]], marker="o", label=name)
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss (augmented, smoothed labels)")
    a2.set_xlabel("epoch")
    a2.set_ylabel("held-out fold accuracy, float (%)")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend()
    fig.suptitle(title or "learning curves")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_metrics(path: str | Path, data: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
