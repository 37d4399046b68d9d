"""`soundmon classify`: recordings through the daemon's own pipeline, as a table or JSON lines.

Each file is streamed by `FileSource` (fast pace) through `Pipeline`, exactly as `soundmon run
--source FILE` would, so a result here is what the daemon would have published. The clip-level
score of a label is the mean of its window scores (gated near-silent windows excluded), or their
max when the bundle's `placement.clip_score` says `max` (training chose that rule by its
cross-validation, so classify scores a clip as the bundle was measured); events are the
detector's start/end pairs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from monitor.bundle import ModelBundle
from monitor.config import Config
from monitor.errors import AudioFileError, BundleError
from monitor.file_source import FileSource
from monitor.pipeline import Pipeline, WindowResult
from monitor.runners import runners_for_opened

__all__ = ["ClipResult", "classify_file", "clip_score_rule", "format_table", "run_classify"]


@dataclass
class ClipResult:
    """One file's classification (`classify_file`): what `classify --json` prints (`to_json`)
    and what the table shows (`format_table`).

    Fields: `file`, the path as given; `duration_s`, the recording's length; `label` and `score`,
    the best label by its clip score (`clip_score_rule`) and that score, None and 0.0 when no
    window was scored (all gated); `scores`, every label's clip score; `events`, the detector's
    events as {"label", "start_s", "end_s", "score"} (seconds from the file's start; the score is
    the event's peak, events still open at the end end there); `windows`, windows run (shown in
    the table, not in the JSON); `error` and `decoded_s`, below.
    """

    file: str
    duration_s: float
    label: str | None
    score: float
    scores: dict[str, float]
    events: list[dict] = field(default_factory=list)
    windows: int = 0
    error: str | None = None  # a decode error part-way: the result covers only `decoded_s`
    decoded_s: float | None = None

    def to_json(self) -> str:
        """One JSON line; `error` and `decoded_s` appear only when the file failed part-way."""
        obj = {
            "file": self.file,
            "duration_s": round(self.duration_s, 3),
            "label": self.label,
            "score": round(self.score, 4),
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "events": self.events,
        }
        if self.error is not None:
            obj["error"] = self.error
            obj["decoded_s"] = round(self.decoded_s or 0.0, 3)
        return json.dumps(obj)


def classify_file(
    path: str | Path,
    bundle: ModelBundle,
    runner,
    cfg: Config,
    warm_start: bool = False,
    start_runner=None,
    on_result: Callable[[WindowResult], None] | None = None,
) -> ClipResult:
    """Stream one recording through the pipeline; raise AudioFileError if it cannot be opened.

    A decode error part-way does not throw the decoded part away: the result covers the audio
    up to the error (its open events end there) and carries `error` and `decoded_s`.

    Without `warm_start` (the clip rule of `soundmon classify`) the first window needs a full
    window of audio; with it, the events are the ones `soundmon run` would publish. `start_runner`:
    the bundle's start model (`monitor.fast_start.start_runner_for`) for `detection.fast_start_threshold`;
    `on_result`, called with every result of the pipeline in stream order (an evaluation that
    looks at the scores themselves)."""
    source = FileSource(path, bundle.frontend.sample_rate, pace="fast", block_seconds=1.0)
    pipeline = Pipeline(bundle, runner, cfg.detection, warm_start=warm_start, start_runner=start_runner)
    score_sum = np.zeros(len(bundle.labels), dtype=np.float64)
    score_max = np.zeros(len(bundle.labels), dtype=np.float64)
    scored = 0
    events: dict[str, dict] = {}

    def consume(results) -> None:
        nonlocal scored
        for res in results:
            if on_result is not None:
                on_result(res)
            if res.scores is not None:  # a window the level gate let through (a start check has none)
                score_sum[:] += res.scores
                np.maximum(score_max, res.scores, out=score_max)
                scored += 1
            _collect(res.events, events)

    error: AudioFileError | None = None
    try:
        while not source.finished:
            consume(pipeline.process(source.read(timeout=1.0)))
    except AudioFileError as exc:  # part-way: FileSource delivered everything before the error
        error = exc
    padded, closing = pipeline.finish()
    consume(padded)
    _collect(closing, events)
    labels = bundle.labels
    rule = clip_score_rule(bundle)
    mean = score_max if rule == "max" else (score_sum / scored if scored else score_sum)
    best = int(np.argmax(mean)) if scored else -1
    return ClipResult(
        file=str(path),
        duration_s=source.duration_s,
        label=labels[best] if best >= 0 else None,
        score=float(mean[best]) if best >= 0 else 0.0,
        scores={label: float(v) for label, v in zip(labels, mean, strict=True)},
        events=sorted(events.values(), key=lambda e: (e["start_s"], e["label"])),
        windows=pipeline.stats.windows,
        error=str(error) if error is not None else None,
        decoded_s=source.decoded_s if error is not None else None,
    )


def clip_score_rule(bundle: ModelBundle) -> str:
    """How a clip's score comes from its window scores: the bundle's `placement.clip_score`,
    "mean" (the default, and what every CNN bundle says) or "max" (`soundmon train --backbone
    --clip-score`, or its `auto` choice when the max scored better in cross-validation)."""
    rule = bundle.placement.get("clip_score") or "mean"
    if rule not in ("mean", "max"):
        raise BundleError(f"model bundle {bundle.name}: placement.clip_score is {rule!r}; this soundmon "
                          "scores a clip by the 'mean' or the 'max' of its windows")  # fmt: skip
    return rule


def _collect(new_events, events: dict[str, dict]) -> None:
    for ev in new_events:
        if ev.type == "start":
            events[ev.id] = {"label": ev.label, "start_s": round(ev.start_offset_s, 3), "end_s": None,
                             "score": round(ev.score, 4)}  # fmt: skip
        else:
            entry = events.setdefault(ev.id, {"label": ev.label, "start_s": round(ev.start_offset_s, 3)})
            entry["end_s"] = round(ev.end_offset_s, 3) if ev.end_offset_s is not None else None
            entry["score"] = round(ev.peak_score, 4)


def format_table(result: ClipResult, top: int | None = None) -> str:
    """A readable block for one file: best labels with scores, then events. `top` labels are
    shown (default 3, or 5 for a bundle with more than 10 labels, e.g. AudioSet's 521: the JSON
    keeps every score); the label column is as wide as the longest label shown."""
    lines = [f"{result.file}  ({result.duration_s:.1f} s, {result.windows} windows)"]
    if result.error is not None:
        lines.append(f"  only the first {result.decoded_s or 0.0:.1f} s could be decoded")
    if top is None:
        top = 3 if len(result.scores) <= 10 else 5
    ranked = sorted(result.scores.items(), key=lambda kv: -kv[1])[:top]
    width = max([18] + [len(label) for label, _ in ranked] + [len(ev["label"]) for ev in result.events])
    for label, score in ranked:
        bar = "#" * int(round(score * 20))
        lines.append(f"  {label:<{width}} {score:5.2f}  {bar}")
    if result.events:
        lines.append("  events:")
        for ev in result.events:
            end = f"{ev['end_s']:7.2f}" if ev.get("end_s") is not None else "      ?"
            lines.append(f"    {ev['start_s']:7.2f} - {end} s  {ev['label']:<{width}} peak {ev['score']:.2f}")
    else:
        lines.append("  events: none above threshold")
    return "\n".join(lines)


def run_classify(
    paths: list[str], bundle: ModelBundle, runner, cfg: Config, as_json: bool,
    out: TextIO = sys.stdout, err: TextIO = sys.stderr,
) -> int:  # fmt: skip
    """Classify every path; a file that fails is reported on `err` and the rest still run.

    A file that fails part-way is reported twice: its partial result on `out` (marked) and a
    warning line on `err`. Returns 0 when every file was classified whole, 1 otherwise."""
    failed = 0
    clip_score_rule(bundle)  # a rule this soundmon does not know: one line before any file
    # the model the CLI opened, with the start model added as the daemon adds it (`build_runners`)
    runners = runners_for_opened(cfg.model.resolved_path(), cfg.model.threads, cfg.detection, bundle, runner)
    for path in paths:
        try:
            result = classify_file(path, runners.bundle, runners.runner, cfg, start_runner=runners.start_runner)
        except AudioFileError as exc:
            print(f"soundmon classify: {exc}", file=err)
            failed += 1
            continue
        print(result.to_json() if as_json else format_table(result), file=out, flush=True)
        if result.error is not None:
            print(f"soundmon classify: warning: {result.error}; the result covers the first "
                  f"{result.decoded_s or 0.0:.1f} s only", file=err, flush=True)  # fmt: skip
            failed += 1
    return 1 if failed else 0
