"""Which short sounds the start model may open alone, measured on the held-out onset streams.

The detector publishes a start-model opening only when the main model backs it (rule 4 of
`monitor.detector`), which kept 0-second false alarms off the street recordings. A gun shot is
often over before the 4 s model can back it, so that rule also drops real ones. Issue 21 allows
an event shorter than a hop for "a class whose sounds are that short, when the measured
precision says so"; this measures it. For each candidate label (default: the short sounds
gun_shot, dog_bark and car_horn) the bundle's CV fold models stream their held-out folds
(`training.evaluation.onset_streams`) twice with the daemon's default detection settings: every
candidate backed, then every candidate alone (labels are independent in the detector, so one run
serves all). The events the exception adds are right when a clip of their class lies in the
window that fired them. A label qualifies when it adds at least `--min-events` events and at
least `--min-precision` of them are right.

    python -m training.evaluation.fast_start_alone --model models/urban10 --dataset ../shared/data/UrbanSound8K --write

`--write` stores the qualifying labels in the bundle JSON (`"detection": {"fast_start_alone": [...]}`,
the default of `detection.classes.<label>.fast_start_alone`) and in its CV fold bundles, and the
table under `"fast_start_alone_measured"`, which the model card shows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from monitor.bundle import FAST_START_ALONE_KEY, bundle_paths, load_bundle
from monitor.config import Config
from monitor.errors import SoundmonError
from training.bundle_files import cv_dir_for
from training.evaluation.onset_streams import stream_report

__all__ = ["SHORT_SOUNDS", "choose", "format_table", "main", "measure", "write_choice"]

SHORT_SOUNDS = ("gun_shot", "dog_bark", "car_horn")
"""UrbanSound8K's classes whose sounds often last less than a hop (0.5 s)."""


def _config(labels: list[str], alone: bool) -> Config:
    """The daemon's defaults with each of `labels` alone (or explicitly backed)."""
    return Config.model_validate({"detection": {"classes": {x: {"fast_start_alone": alone} for x in labels}}})


def measure(model: Path, dataset: Path, candidates: list[str]) -> list[dict]:
    """Per candidate: onsets answered, median delay and events (right) backed and alone, and the
    events the exception adds with how many of them are right."""
    rows = {}
    for alone in (False, True):
        for r in stream_report(model, dataset, _config(candidates, alone), by_class=True):
            rows[(r["class"], alone)] = r
    out = []
    for label in candidates:
        backed, solo = rows.get((label, False)), rows.get((label, True))
        if backed is None or solo is None:
            continue
        added = solo["events"] - backed["events"]
        added_right = solo["events_right"] - backed["events_right"]
        out.append({
            "label": label, "onsets": backed["onsets"],
            "answered_backed": backed["answered"], "answered_alone": solo["answered"],
            "median_delay_backed_s": backed["median_delay_s"], "median_delay_alone_s": solo["median_delay_s"],
            "events_added": added, "added_right": added_right,
            "added_precision": round(added_right / added, 3) if added > 0 else None,
        })  # fmt: skip
    return out


def choose(rows: list[dict], min_precision: float, min_events: int) -> list[str]:
    """The labels whose added events are enough and right often enough."""
    return [r["label"] for r in rows
            if r["events_added"] >= min_events and (r["added_precision"] or 0.0) >= min_precision]  # fmt: skip


def format_table(rows: list[dict], chosen: list[str]) -> str:
    """The measurement as a Markdown table (the model card shows it)."""
    lines = ["| label | onsets | answered: backed / alone | median delay (s) | events added | of them right | alone |",
             "|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        prec = "-" if r["added_precision"] is None else f"{r['added_right']} ({100 * r['added_precision']:.1f} %)"
        lines.append(f"| {r['label']} | {r['onsets']} | {r['answered_backed']} / {r['answered_alone']} | "
                     f"{r['median_delay_backed_s']} / {r['median_delay_alone_s']} | {r['events_added']} | {prec} | "
                     f"{'yes' if r['label'] in chosen else 'no'} |")  # fmt: skip
    return "\n".join(lines)


def write_choice(model: Path, chosen: list[str], rows: list[dict], rule: dict) -> list[Path]:
    """Store the choice in the bundle JSON, the table beside it, and the choice in each CV fold
    bundle too (so the onset streams of `tools.detector_comparison` run what ships); each is
    checked by loading it again. Returns the JSON files written."""
    paths = [bundle_paths(model)[1], *sorted(cv_dir_for(model).glob("fold*.json"))]
    for json_path in paths:
        data = json.loads(json_path.read_text())
        detection = {k: v for k, v in (data.get("detection") or {}).items() if k != FAST_START_ALONE_KEY}
        if chosen:
            detection[FAST_START_ALONE_KEY] = chosen
        if detection:
            data["detection"] = detection
        else:
            data.pop("detection", None)
        if json_path == paths[0]:
            data["fast_start_alone_measured"] = {**rule, "rows": rows, "chosen": chosen}
        json_path.write_text(json.dumps(data, indent=2) + "\n")
        load_bundle(json_path.with_suffix(""))
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.evaluation.fast_start_alone", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="bundle with a start model and <model>_cv/ fold models")
    ap.add_argument("--dataset", type=Path, required=True, help="the dataset its folds were held out from")
    ap.add_argument("--labels", default=",".join(SHORT_SOUNDS), help="candidates, comma-separated (default: %(default)s)")
    ap.add_argument("--min-precision", type=float, default=0.95, help="share of added events right (default: %(default)s)")
    ap.add_argument("--min-events", type=int, default=10, help="events the exception must add (default: %(default)s)")
    ap.add_argument("--write", action="store_true", help="store the choice and the table in the bundle JSON")
    args = ap.parse_args(argv)
    try:
        bundle = load_bundle(args.model)
        candidates = [x for x in args.labels.split(",") if x]
        unknown = sorted(set(candidates) - set(bundle.labels))
        if unknown:
            raise SoundmonError(f"{args.model}: no label(s) {unknown}; labels are {bundle.labels}")
        if bundle.start_model is None:
            raise SoundmonError(f"{args.model}: the bundle names no start model (python -m training.attach_start)")
        rows = measure(args.model, args.dataset, candidates)
    except SoundmonError as exc:  # a bad model, dataset or label: one line, not a traceback
        print(f"fast_start_alone: {exc}", file=sys.stderr)
        return exc.exit_code
    chosen = choose(rows, args.min_precision, args.min_events)
    print(format_table(rows, chosen))
    if args.write:
        paths = write_choice(args.model, chosen, rows, {"min_precision": args.min_precision, "min_events": args.min_events})
        print(f"wrote detection.{FAST_START_ALONE_KEY} = {chosen} into {paths[0]} and {len(paths) - 1} fold bundle(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
