"""Issue 21's detector metric for several models side by side: the model card's comparison table.

    python -m tools.detector_comparison --recordings ../shared/data/recordings \\
        --dataset ../shared/data/UrbanSound8K \\
        --row "new default=models/urban10" \\
        --row "new, fast start off=models/urban10:fast_start_off.yaml" \\
        --row "YAMNet-backbone (teacher)=models/urban10_yamnet" \\
        --json-out cmp.json --md-out cmp.md

Each `--row NAME=MODEL[:CONFIG]` runs `soundmon evaluate --recordings`'s detector metric
(`training.evaluation.detector_metrics`: the daemon's pipeline and detection defaults, or the
CONFIG's) over the recordings, split into the ones whose clips the model heard in training and
the ones it did not; and, when `--dataset` is given and the bundle keeps its cross-validation fold
models (`<model>_cv/`), the onset streams of its held-out folds
(`training.evaluation.onset_streams`: answered onsets, delays, events right, and the same segment F1
and short events against the clips' exact times). One JSON with every figure, one Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from monitor.config import load_config
from monitor.errors import SoundmonError
from training.evaluation.detector_metrics import detector_metrics_on_recordings
from training.evaluation.onset_streams import stream_report

__all__ = ["Row", "compare", "markdown", "parse_row"]

Row = tuple[str, Path, Path | None]


def parse_row(text: str) -> Row:
    """`NAME=MODEL[:CONFIG]` -> (name, model, config or None)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"--row {text!r}: want NAME=MODEL[:CONFIG]")
    model, _, config = rest.partition(":")
    return name, Path(model), Path(config) if config else None


def _split(det: dict, name: str) -> dict | None:
    d = det["detector"].get(name)
    if d is None:
        return None
    keys = ("recordings", "segment_f1", "segment_precision", "segment_recall", "other_class_alarms",
            "other_class_alarms_per_minute", "median_onset_latency_s", "events", "short_events", "minutes")  # fmt: skip
    return {k: d.get(k) for k in keys}


def compare(rows: list[Row], recordings: Path, dataset: Path | None) -> list[dict]:
    """Every row's figures: recordings split into unseen / seen, and its onset streams per fold."""
    out = []
    for name, model, config in rows:
        print(f"{name}: {model}{f' with {config}' if config else ''} ...", file=sys.stderr, flush=True)
        det = detector_metrics_on_recordings(model, recordings, config)
        entry = {"name": name, "model": str(model), "config": str(config) if config else None,
                 "unseen": _split(det, "unseen"), "seen": _split(det, "seen"), "streams": None}  # fmt: skip
        if dataset is not None and Path(f"{model}_cv").is_dir():
            entry["streams"] = stream_report(model, dataset, load_config(config))
        out.append(entry)
    return out


def _streams_cell(rows: list[dict] | None, key: str, fmt) -> str:
    if not rows:
        return "-"
    return " / ".join("-" if r.get(key) is None else fmt(r[key]) for r in rows)


def markdown(results: list[dict]) -> str:
    """The comparison as one Markdown table: the unseen recordings, then the onset streams."""
    lines = [
        "| model and settings | segment F1 (P / R) | other-class alarms per min | median onset latency | "
        "events shorter than a hop | onset streams: answered | median delay | events right | segment F1 | "
        "shorter than a hop |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        u = r["unseen"] or {}
        f1 = "-" if u.get("segment_f1") is None else (
            f"{u['segment_f1']:.2f} ({u['segment_precision']:.2f} / {u['segment_recall']:.2f})")
        lat = "-" if u.get("median_onset_latency_s") is None else f"{u['median_onset_latency_s']:.2f} s"
        s = r["streams"]
        answered = " / ".join(f"{100 * x['answered'] / max(1, x['onsets']):.0f} %" for x in s) if s else "-"
        lines.append(
            f"| {r['name']} | {f1} | {u.get('other_class_alarms_per_minute', '-')} ({u.get('other_class_alarms', '-')}) "
            f"| {lat} | {u.get('short_events', '-')} of {u.get('events', '-')} | {answered} "
            f"| {_streams_cell(s, 'median_delay_s', lambda v: f'{v:.2f} s')} "
            f"| {_streams_cell(s, 'event_precision', lambda v: f'{100 * v:.0f} %')} "
            f"| {_streams_cell(s, 'segment_f1', lambda v: f'{v:.2f}')} "
            f"| {_streams_cell(s, 'short_events', str)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.detector_comparison", description=__doc__.split("\n\n")[0])
    ap.add_argument("--recordings", type=Path, required=True, help="folder of <fsID>.flac with labels.csv")
    ap.add_argument("--dataset", type=Path, default=None, help="also the onset streams of each model's CV folds")
    ap.add_argument("--row", type=parse_row, action="append", required=True, metavar="NAME=MODEL[:CONFIG]")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--md-out", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        results = compare(args.row, args.recordings, args.dataset)
    except SoundmonError as exc:
        print(f"detector_comparison: {exc}", file=sys.stderr)
        return exc.exit_code
    table = markdown(results)
    print(table)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    if args.md_out:
        args.md_out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
