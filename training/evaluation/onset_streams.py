"""Onset streams: a latency yardstick with thousands of exactly known onsets, from held-out clips.

`python -m tools.latency` counts about 20 answered onsets on the street recordings; its median
moves by half a hop when one or two of them change, and half of them are a recording's first
second. Here each cross-validation fold's clips are joined in a seeded random order into one
stream (every clip boundary where the class changes is an onset, its time exact), streamed
through the daemon's pipeline and detector (warm start, the config's detection settings) by
that fold's model, which never trained on them. Per fold it reports the onsets, the share that
got a new event of their class (decided between the onset and the clip's end + one hop, as
`tools.latency` counts), the median delay and the share within hop + 0.3 s, the event
precision (an event is right when a clip of its class lies in the window that fired it), and
issue 21's segment F1 per whole second and events shorter than one hop
(`training.evaluation.segment_metrics`, with each clip an occurrence at its exact place; every
class is in every stream, so there are no other-class alarms to count).

Joined clips end abruptly, so a new sound never starts over an old one that goes on (easier than
a street), and many clips are short or quiet (harder): compare models and detector settings with
it, not its median with the budget. Joined end to end, the previous sound's event is usually still
open when the next one begins; `--gaps 1,4` puts a silence before every clip, so each onset also
follows an event that has just closed: the case where a start model that mistakes a new sound for
the one before can open a wrong event (card step 64).

`--sure-at 0.5,0.75` adds how soon each model is sure of an onset at all: the onsets whose class
the start model (at its windows and checks) or the 4 s model (at its windows) first ranks top at
>= T, and their median delay. No detector rule stands between: it is what opening the moment a
model is sure would give, with no regard for the wrong labels it is also sure of (card step 70).

Usage: `python -m training.evaluation.onset_streams --model models/urban10 --dataset ../shared/data/UrbanSound8K`
(the bundle's `<model>_cv/fold<k>` models, as `soundmon evaluate --cv` uses them).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.bundle import load_bundle
from monitor.config import Config, load_config
from monitor.detector import DetectionEvent
from monitor.errors import SoundmonError
from monitor.fast_start import start_runner_for
from monitor.pipeline import Pipeline, WindowResult
from monitor.runner import open_model
from training.datasets import Dataset, load_audio, read_dataset
from training.evaluation.clip_accuracy import check_labels
from training.evaluation.cv_accuracy import fold_bundles
from training.evaluation.detector_metrics import percent
from training.evaluation.labelled_onsets import first_new_event, first_sure, sure_at_arg, sure_row
from training.evaluation.segment_metrics import RecordingTally, shorter_than_hop, tally_recording

__all__ = ["FoldRun", "Segment", "fold_runs", "fold_stream", "format_sure", "gap_range", "main", "onset_answers",
           "onset_segments", "stream_report", "sure_report"]


@dataclass(frozen=True)
class Segment:
    """One clip's place in the joined stream (seconds) and its class."""

    start_s: float
    end_s: float
    label: str


def fold_stream(dataset: Dataset, fold: int, sample_rate: int, seed: int = 0,
                gaps: tuple[float, float] | None = None) -> tuple[np.ndarray, list[Segment]]:  # fmt: skip
    """The fold's clips joined in a seeded random order, and where each one lies: end to end, or
    with `gaps` = (lo, hi), a silence drawn uniformly from lo..hi seconds before every clip but
    the first (the same order as without gaps)."""
    clips = [c for c in dataset.clips if c.fold == fold]
    order = np.random.default_rng([seed, fold]).permutation(len(clips))
    silences = None if gaps is None else np.random.default_rng([seed, fold, 1]).uniform(*gaps, len(clips))
    pieces, segments, t = [], [], 0.0
    for n, i in enumerate(order):
        if silences is not None and n > 0:
            pieces.append(np.zeros(int(round(silences[n] * sample_rate)), np.float32))
            t += len(pieces[-1]) / sample_rate
        audio = load_audio(clips[i].path, sample_rate)
        pieces.append(audio)
        segments.append(Segment(t, t + len(audio) / sample_rate, clips[i].label))
        t += len(audio) / sample_rate
    return (np.concatenate(pieces) if pieces else np.zeros(0, np.float32)), segments


def onset_segments(segments: list[Segment]) -> list[Segment]:
    """The clips that are onsets: each one whose class differs from the clip's before it."""
    return [seg for k, seg in enumerate(segments) if k == 0 or seg.label != segments[k - 1].label]


def onset_answers(segments: list[Segment], starts: list[tuple[str, float]], hop: float) -> list[tuple[str, float | None]]:
    """(class, delay or None) per onset (`onset_segments`); an onset is answered by the first start
    of its class between its start and its end + hop."""
    out: list[tuple[str, float | None]] = []
    for seg in onset_segments(segments):
        first = first_new_event([s for label, s in starts if label == seg.label], seg.start_s, seg.end_s, hop)
        out.append((seg.label, None if first is None else first - seg.start_s))
    return out


def _right(label: str, start_s: float, window_s: float, segments: list[Segment]) -> bool:
    """A clip of the event's class overlaps the window that fired it."""
    return any(s.label == label and s.start_s < start_s and start_s - window_s < s.end_s for s in segments)


def _row(key: str, value, answers: list[tuple[str, float | None]], rights: list[bool], budget: float,
         segment: RecordingTally | None = None) -> dict:  # fmt: skip
    """One report row from its onsets' answers, its events' rightness and (`segment`) its
    per-second counts and events shorter than one hop."""
    delays = [d for _, d in answers if d is not None]
    # Delays here are differences of stream offsets (window end - onset), so a nominal 0.8 s
    # can come out a hair above it; 1e-9 s of slack counts it in. (`tools.latency` measures
    # wall-clock times and compares exactly: no reading lands that close to the budget.)
    return {
        key: value,
        "onsets": len(answers),
        "answered": len(delays),
        "median_delay_s": round(float(np.median(delays)), 2) if delays else None,
        "within_budget": round(float(np.mean(np.array(delays) <= budget + 1e-9)), 3) if delays else None,
        "events": len(rights),
        "events_right": int(sum(rights)),
        "event_precision": round(sum(rights) / len(rights), 3) if rights else None,
        **(_segment_figures(segment) if segment is not None else {}),
    }


def _segment_figures(tally: RecordingTally) -> dict:
    """Segment F1, precision and recall per whole second (`training.evaluation.segment_metrics`),
    the counts behind them and the events shorter than one hop."""
    s = tally.summary()
    return {k: s[k] for k in ("segment_f1", "segment_precision", "segment_recall", "tp", "fp", "fn", "short_events")}


@dataclass
class FoldRun:
    """One fold's stream through the daemon's pipeline: where its clips lie, every result
    (windows and start checks, in stream order), the events that started and those that ended."""

    fold: int
    seconds: float
    labels: list[str]
    segments: list[Segment]
    results: list[WindowResult]
    starts: list[tuple[str, float]]
    ended: list[DetectionEvent]


def fold_runs(model: Path, dataset: Path, cfg: Config, seed: int = 0,
              gaps: tuple[float, float] | None = None) -> list[FoldRun]:  # fmt: skip
    """Each held-out fold's stream (`fold_stream`) through its fold model, the daemon's pipeline
    and detector with `cfg`'s detection settings (after the bundle's defaults, as `soundmon run`)."""
    ds = read_dataset(dataset)
    cfg.detection.apply_bundle_defaults(load_bundle(model).detection_defaults)  # as `soundmon run` does
    hop = cfg.detection.hop_seconds
    runs = []
    for fold, fold_bundle in sorted(fold_bundles(model).items()):
        if fold not in ds.folds:
            continue
        bundle, runner = open_model(fold_bundle.tflite_path.with_suffix(""), cfg.model.threads, hop)
        check_labels(ds, bundle, model)
        audio, segments = fold_stream(ds, fold, bundle.frontend.sample_rate, seed, gaps)
        start_runner = start_runner_for(bundle, cfg.detection, cfg.model.threads)
        pipeline = Pipeline(bundle, runner, cfg.detection, warm_start=cfg.detection.warm_start,
                            start_runner=start_runner)  # fmt: skip
        results: list[WindowResult] = []
        block = bundle.frontend.sample_rate  # 1 s blocks, as a file source hands them over
        for k in range(0, len(audio), block):
            results += pipeline.process(audio[k : k + block])
        starts = [(e.label, e.start_offset_s) for r in results for e in r.events if e.type == "start"]
        ended = [e for r in results for e in r.events if e.type == "end"] + pipeline.finish()[1]
        runs.append(FoldRun(fold, len(audio) / bundle.frontend.sample_rate, list(bundle.labels), segments,
                            results, starts, ended))  # fmt: skip
    if not runs:
        raise SystemExit(f"onset_streams: no fold model of {model} is held out on a fold of {dataset}")
    return runs


def stream_report(model: Path, dataset: Path, cfg: Config, seed: int = 0, by_class: bool = False,
                  gaps: tuple[float, float] | None = None, runs: list[FoldRun] | None = None) -> list[dict]:  # fmt: skip
    """One row per fold model (or, `by_class`, per class over all folds): onsets, answered, median
    delay, share within budget, events and their precision. `gaps`: silences between the clips
    (`fold_stream`); `runs`: the folds already streamed (`fold_runs`, with the same settings)."""
    runs = fold_runs(model, dataset, cfg, seed, gaps) if runs is None else runs
    hop = cfg.detection.hop_seconds
    budget = hop + 0.3
    rows = []
    pooled_answers: list[tuple[str, float | None]] = []
    pooled_events: list[tuple[str, bool]] = []
    pooled_tally = RecordingTally()
    pooled_short: list[str] = []
    window_s = load_bundle(model).window_seconds
    for run in runs:
        segments, events, ended = run.segments, run.starts, run.ended
        answers = onset_answers(segments, events, hop)
        rights = [_right(label, s, window_s, segments) for label, s in events]
        tally = tally_recording([(e.label, e.start_offset_s, e.end_offset_s) for e in ended],
                                [(s.label, s.start_s, s.end_s) for s in segments], run.seconds, hop)  # fmt: skip
        pooled_answers += answers
        pooled_events += [(label, r) for (label, _), r in zip(events, rights, strict=True)]
        pooled_tally += tally
        pooled_short += [e.label for e in ended if shorter_than_hop(e.start_offset_s, e.end_offset_s, hop)]
        row = _row("fold", run.fold, answers, rights, budget, tally)
        rows.append({"fold": run.fold, "minutes": round(run.seconds / 60, 1), **row})
    if by_class:
        labels = sorted({label for label, _ in pooled_answers} | {label for label, _ in pooled_events})
        return [_row("class", label, [a for a in pooled_answers if a[0] == label],
                     [r for lab, r in pooled_events if lab == label], budget,
                     RecordingTally(*pooled_tally.per_class.get(label, [0, 0, 0]),
                                    short_events=pooled_short.count(label)))
                for label in labels]  # fmt: skip
    return rows


def sure_report(runs: list[FoldRun], thresholds: list[float], hop: float) -> list[dict]:
    """How soon each model is sure of an onset at all: per model and threshold T, the onsets
    (as `onset_answers` counts them) whose class the model first ranks top at >= T between the
    onset and the clip's end + one hop, and their median delay. No detector rule, smoothing or
    backing, and no count of the wrong labels it would be sure of: the floor under the delay
    of any detection setting with these models (issue 21's latency)."""
    models = {"start model": lambda r: r.start_scores, "4 s model": lambda r: r.scores}
    rows = []
    for name, scores_of in models.items():
        streams = []  # per run the model scored: its (offset, scores) in stream order and the offsets alone
        for run in runs:
            scored = [(r.end_offset_s, scores_of(r)) for r in run.results]
            if any(s is not None for _, s in scored):
                streams.append((run, scored, [offset for offset, _ in scored]))
        for t in thresholds:
            delays: list[float | None] = []
            for run, scored, offsets in streams:
                for seg in onset_segments(run.segments):
                    after = itertools.islice(scored, bisect.bisect_right(offsets, seg.start_s), None)  # speed
                    first = first_sure(after, run.labels.index(seg.label), seg.start_s, seg.end_s + hop + 1e-9, t)
                    delays.append(None if first is None else first - seg.start_s)
            if delays:
                reached = np.array([d for d in delays if d is not None])
                rows.append({"model": name, **sure_row(t, delays),
                             "within_budget": round(float(np.mean(reached <= hop + 0.3 + 1e-9)), 3)
                             if len(reached) else None})  # fmt: skip
    return rows


def format_sure(rows: list[dict], hop: float) -> str:
    """`sure_report` as a Markdown table."""
    lines = [f"| model | top at >= | onsets reached | median delay (s) | within {hop + 0.3:.1f} s |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        median = "-" if r["median_delay_s"] is None else r["median_delay_s"]
        lines.append(f"| {r['model']} | {r['threshold']:g} | {r['reached']} of {r['onsets']} | {median} | "
                     f"{percent(r['within_budget'])} |")  # fmt: skip
    return "\n".join(lines)


def _segment_cell(r: dict) -> str:
    """`0.62 (0.70 / 0.56)`: a row's segment F1 (precision / recall), or "-"."""
    def two(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    if r.get("segment_f1") is None:
        return "-"
    return f"{two(r['segment_f1'])} ({two(r['segment_precision'])} / {two(r['segment_recall'])})"


def format_rows(rows: list[dict], hop: float) -> str:
    """The report as a Markdown table, one row per fold (or per class)."""
    key, extra = ("fold", "audio (min) | ") if "fold" in rows[0] else ("class", "")
    lines = [
        f"| {key} | {extra}onsets | answered | median delay (s) | within {hop + 0.3:.1f} s | events | events right "
        "| segment F1 (P / R) | shorter than a hop |",
        "|---:|" + "---:|" * (9 if extra else 8),
    ]
    for r in rows:
        median = "-" if r["median_delay_s"] is None else r["median_delay_s"]
        minutes = f"{r['minutes']} | " if extra else ""
        lines.append(
            f"| {r[key]} | {minutes}{r['onsets']} | {r['answered']} | {median} | "
            f"{percent(r['within_budget'])} | {r['events']} | {percent(r['event_precision'])} "
            f"| {_segment_cell(r)} | {r.get('short_events', '-')} |"
        )
    return "\n".join(lines)


def gap_range(text: str) -> tuple[float, float]:
    """`--gaps LO,HI`: two finite seconds, 0 <= LO <= HI."""
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI in seconds, e.g. 1,4; got {text!r}") from None
    if not (0.0 <= lo <= hi < float("inf")):
        raise argparse.ArgumentTypeError(f"expected 0 <= LO <= HI seconds; got {text!r}")
    return lo, hi


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.evaluation.onset_streams", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="bundle whose <model>_cv/ fold models to use")
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=None, help="detection settings (default: the daemon's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--by-class", action="store_true", help="one row per class over all folds instead of per fold")
    ap.add_argument("--gaps", type=gap_range, default=None, metavar="LO,HI",
                    help="a silence of LO..HI seconds (drawn per clip) before every clip but the first")  # fmt: skip
    ap.add_argument("--sure-at", type=sure_at_arg, default=None, metavar="T,...",
                    help="also print how soon each model ranks an onset's class top at >= each T at all "
                    "(the floor under any detection setting's delay)")  # fmt: skip
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
        runs = fold_runs(args.model, args.dataset, cfg, args.seed, args.gaps)
        rows = stream_report(args.model, args.dataset, cfg, by_class=args.by_class, runs=runs)
    except SoundmonError as exc:  # a bad model, dataset or config: one line, not a traceback
        print(f"onset_streams: {exc}", file=sys.stderr)
        return exc.exit_code
    print(format_rows(rows, cfg.detection.hop_seconds))
    if args.sure_at:
        print()
        print(format_sure(sure_report(runs, args.sure_at, cfg.detection.hop_seconds), cfg.detection.hop_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
