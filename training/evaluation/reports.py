"""Report files of an evaluation: the per-class Markdown table, confusion and learning-curve plots, metrics JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["per_class_table", "plot_confusion", "plot_learning_curve", "write_metrics"]


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
