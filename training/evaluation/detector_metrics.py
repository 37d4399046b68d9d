"""Detector metrics: a bundle and the daemon's detector on full-length recordings with timed labels.

Each recording is streamed through the daemon's own pipeline (`monitor.classify.classify_file`,
default detection settings or a config), and its events are matched to the labelled
occurrences of `labels.csv` (fsID, class, start, end):

- an occurrence is **found** if an event of its class overlaps it, where an event covers
  [start_s - window, end_s] (the window that fired ends at start_s, so the sound may sit
  anywhere in the 4 s before it);
- an event is **correct** if it overlaps a labelled occurrence of its class in that recording.
  The unlabelled parts are not guaranteed background (the NOTICE says so), so "incorrect"
  events are an upper bound on false alarms.
- the **decision delay** is counted from each annotated occurrence's start
  (`training.evaluation.labelled_onsets`: a labels.csv row that begins at a later kept slice is taken
  back to where the sound began, rows of one occurrence counted once), as
  `python -m tools.latency` counts it; recall and precision stay on the labels.csv rows.

The detector metrics of `training.evaluation.segment_metrics` (segment F1 per whole second, other-class
alarms per minute, events shorter than one hop) are reported for all recordings and split by
whether the model heard a recording: **seen** when its fsID is the source of a clip the model
was trained on (the bundle's `data.root` and `data.folds`), **unseen** otherwise.

Usage: `python -m training.evaluation.detector_metrics --model models/urban10 --recordings DIR [--config C]`,
or `soundmon evaluate --model M --recordings DIR [--config C]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monitor.bundle import bundle_paths, load_bundle
from monitor.classify import classify_file
from monitor.config import load_config
from monitor.fast_start import start_runner_for
from monitor.pipeline import WindowResult
from monitor.runner import open_model
from training.evaluation.labelled_onsets import (
    first_new_event,
    first_sure,
    labelled_onsets,
    sure_row,
)
from training.evaluation.labelled_recordings import read_occurrences, training_fsids
from training.evaluation.segment_metrics import RecordingTally, tally_recording

__all__ = ["detector_metrics_on_recordings", "format_detector_lines", "main", "percent"]


def _overlaps(a0: float, a1: float, b0: float, b1: float) -> bool:
    return a0 < b1 and b0 < a1


def detector_metrics_on_recordings(model: Path, recordings: Path, config: Path | None = None,
                                   sure_at: Sequence[float] = ()) -> dict:  # fmt: skip
    """Segment F1, other-class alarms, onset latency, per-class occurrence recall and event
    precision of the daemon's pipeline over every `<fsID>.flac` in labels.csv. `sure_at`: also,
    per split and threshold, how soon the start model is sure of a labelled onset at all
    (`first_sure` at its windows and checks; the floor under any detection setting's latency)."""
    cfg = load_config(config)
    cfg.detection.apply_bundle_defaults(load_bundle(model).detection_defaults)  # as `soundmon run` does
    bundle, runner = open_model(model, cfg.model.threads, cfg.detection.hop_seconds)
    start_runner = start_runner_for(bundle, cfg.detection, cfg.model.threads)
    occ, _folds = read_occurrences(recordings)
    by_file = {fsid: [(cls, a, b) for a, b, cls in rows] for fsid, rows in occ.items()}
    onsets_by_file = defaultdict(list)
    for o in labelled_onsets(recordings):
        onsets_by_file[o["recording"]].append((o["class"], o["onset_s"], o["end_s"]))
    found = defaultdict(lambda: [0, 0])  # class -> [found, total occurrences]
    correct = defaultdict(lambda: [0, 0])  # class -> [correct, total events]
    onset_delays: list[float] = []
    seen_ids = training_fsids(bundle_paths(model)[1])
    tallies: dict[str, RecordingTally] = defaultdict(RecordingTally)  # all / seen / unseen
    split_delays: dict[str, list[float]] = defaultdict(list)
    per_file = []
    sure: dict[str, dict[float, list[float | None]]] = defaultdict(lambda: defaultdict(list))  # split -> T -> delays
    for fsid, occurrences in sorted(by_file.items()):
        results: list[WindowResult] = []  # (with `sure_at` only)
        result = classify_file(recordings / f"{fsid}.flac", bundle, runner, cfg,
                               warm_start=cfg.detection.warm_start, start_runner=start_runner,  # as `soundmon run` does
                               on_result=results.append if sure_at and start_runner is not None else None)  # fmt: skip
        start_scored = [(r.end_offset_s, r.start_scores) for r in results]
        events = [(e["label"], e["start_s"], e["end_s"] if e["end_s"] is not None else e["start_s"])
                  for e in result.events]  # fmt: skip
        for cls, o0, o1 in occurrences:
            hits = [
                e
                for e in events
                if e[0] == cls and _overlaps(e[1] - bundle.window_seconds, e[2], o0, o1)
            ]
            found[cls][1] += 1
            if hits:
                found[cls][0] += 1
        split = "unknown" if seen_ids is None else ("seen" if fsid in seen_ids else "unseen")
        tally = tally_recording(events, [(c, a, b) for c, a, b in occurrences], result.duration_s,
                                cfg.detection.hop_seconds)  # fmt: skip
        tallies["all"] += tally
        tallies[split] += tally
        for cls, o0, o1 in onsets_by_file[fsid]:  # counted as `python -m tools.latency` counts it
            first = first_new_event([e[1] for e in events if e[0] == cls], o0, o1, cfg.detection.hop_seconds)
            if first is not None:
                onset_delays.append(first - o0)
                split_delays[split].append(first - o0)
            for t in sure_at if start_scored else ():
                ready = first_sure(start_scored, bundle.labels.index(cls), o0, o1 + cfg.detection.hop_seconds + 1e-9, t)
                for name in ("all", split):
                    sure[name][t].append(None if ready is None else ready - o0)
        for label, e0, e1 in events:
            ok = any(
                cls == label and _overlaps(e0 - bundle.window_seconds, e1, o0, o1)
                for cls, o0, o1 in occurrences
            )
            correct[label][1] += 1
            correct[label][0] += int(ok)
        per_file.append({"fsID": fsid, "split": split, "label": result.label, "events": result.events,
                         "labelled": sorted({c for c, _, _ in occurrences}), "detector": tally.summary()})  # fmt: skip
    total_found = sum(v[0] for v in found.values())
    total_occ = sum(v[1] for v in found.values())
    total_correct = sum(v[0] for v in correct.values())
    total_events = sum(v[1] for v in correct.values())
    onset_delays.sort()
    return {
        "model": bundle.name,
        "recordings": len(by_file),
        "occurrence_recall": round(total_found / total_occ, 3) if total_occ else None,
        "event_precision": round(total_correct / total_events, 3) if total_events else None,
        "occurrences": total_occ,
        "events": total_events,
        "median_decision_delay_s": round(float(np.median(onset_delays)), 2) if onset_delays else None,
        "onsets_with_new_event": len(onset_delays),
        "detector": {
            name: {
                "recordings": sum(1 for f in per_file if name == "all" or f["split"] == name),
                **t.summary(),
                "median_onset_latency_s": (round(float(np.median(onset_delays if name == "all" else split_delays[name])), 2)
                                           if (onset_delays if name == "all" else split_delays[name]) else None),
                **({"start_model_sure": [sure_row(t, delays) for t, delays in sure[name].items()]} if name in sure else {}),
            }  # fmt: skip
            for name, t in tallies.items()
        },
        "per_class": {
            label: {
                "found": f"{found[label][0]}/{found[label][1]}",
                "correct_events": f"{correct[label][0]}/{correct[label][1]}",
            }  # fmt: skip
            for label in bundle.labels
        },
        "per_file": per_file,
    }


def _sure_text(rows: list[dict]) -> str:
    """`; the start model is sure of 8 of 10 onsets at >= 0.5 after 0.83 s, 6 at >= 0.75 after
    1.06 s` (empty without rows)."""
    parts = []
    for k, r in enumerate(rows):
        of = "" if k else f" of {r['onsets']} onsets"
        after = "" if r["median_delay_s"] is None else f" after {r['median_delay_s']} s"
        parts.append(f"{r['reached']}{of} at >= {r['threshold']:g}{after}")
    return f"; the start model is sure of {', '.join(parts)}" if parts else ""


def percent(x: float | None) -> str:
    """A share as a whole percent for a report line ("-" when there is nothing to count)."""
    return "-" if x is None else f"{x:.0%}"


def format_detector_lines(rep: dict) -> list[str]:
    """One line per split (all, unseen, seen): segment F1, other-class alarms, latency, short events."""
    lines = []
    for name in ("all", "unseen", "seen", "unknown"):
        d = rep["detector"].get(name)
        if d is None:
            continue
        f1 = "-" if d["segment_f1"] is None else f"{d['segment_f1']:.2f}"
        p = "-" if d["segment_precision"] is None else f"{d['segment_precision']:.2f}"
        r = "-" if d["segment_recall"] is None else f"{d['segment_recall']:.2f}"
        lines.append(
            f"{name} ({d['recordings']} recordings, {d['minutes']:.1f} min): segment F1 {f1} "
            f"(precision {p}, recall {r}), other-class alarms {d['other_class_alarms_per_minute']} "
            f"per min ({d['other_class_alarms']}), median onset latency {d['median_onset_latency_s']} s, "
            f"events shorter than a hop {d['short_events']} of {d['events']}"
            + _sure_text(d.get("start_model_sure", []))
        )
    return lines


def format_report(rep: dict) -> str:
    lines = [*format_detector_lines(rep), "",
        f"model {rep['model']} on {rep['recordings']} full recordings: "
        f"occurrences found {percent(rep['occurrence_recall'])} of {rep['occurrences']}, "
        f"events on a labelled occurrence {percent(rep['event_precision'])} of {rep['events']}, "
        f"median decision delay after onset {rep['median_decision_delay_s']} s "
        f"({rep['onsets_with_new_event']} onsets with a new event)",
        "",
        "| class | occurrences found | events on a labelled occurrence |",
        "|---|---|---|",
    ]
    for label, v in rep["per_class"].items():
        lines.append(f"| {label} | {v['found']} | {v['correct_events']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.evaluation.detector_metrics", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument(
        "--recordings", type=Path, required=True, help="folder with <fsID>.flac and labels.csv"
    )
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    rep = detector_metrics_on_recordings(args.model, args.recordings, args.config)
    print(format_report(rep))
    if args.json_out:
        args.json_out.write_text(json.dumps(rep, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
