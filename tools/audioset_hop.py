"""What a hop and smoothing cost `models/audioset` in detection, on the demo and the street recordings.

    python -m tools.audioset_hop                                   # the bundle's own defaults
    python -m tools.audioset_hop --setting 0.5,3 --setting 0.975,1 --json-out hop.json

Each setting (`HOP,SMOOTHING`; none = the bundle's defaults) streams `demo/street_demo.flac` and
every `<recordings>/<fsID>.flac` through the daemon's pipeline (`monitor.classify.classify_file`,
the bundle's default watch list and thresholds). The three watched labels our recordings are
labelled with (`dog` = dog_bark, `siren`, `gunshot_gunfire` = gun_shot) are matched to the labelled
occurrences as `soundmon evaluate --recordings` matches them (an event covers [start - window,
end]); every other watched label's events are counted as `other_label_events` (by their labels the
recordings hold none of those sounds). The figures of the audioset card's 'Cost' section.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

from monitor.bundle import load_bundle
from monitor.classify import classify_file
from monitor.config import Config, DetectionConfig
from monitor.fast_start import start_runner_for
from monitor.runner import open_model
from training.evaluation.labelled_recordings import read_occurrences

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "demo" / "street_demo.flac"
DEMO_LABELS = REPO / "demo" / "street_demo_labels.csv"
AS_CLASS = {"dog": "dog_bark", "siren": "siren", "gunshot_gunfire": "gun_shot"}


def _overlaps(a0: float, a1: float, b0: float, b1: float) -> bool:
    return a0 < b1 and b0 < a1


def _labelled_files(recordings: Path) -> dict[str, tuple[Path, list[tuple[str, float, float]]]]:
    """key -> (audio, [(class, start, end)]): the demo and every labelled street recording."""
    occ, _ = read_occurrences(recordings)
    files = {f"recordings/{k}": (recordings / f"{k}.flac", [(c, a, b) for a, b, c in v]) for k, v in occ.items()}
    with DEMO_LABELS.open(newline="") as f:
        files["demo"] = (DEMO, [(r["class"], float(r["start"]), float(r["end"])) for r in csv.DictReader(f)])
    return files


def run(model: Path, recordings: Path, hop: float | None, smoothing: int | None) -> dict:
    """Events and matches of one setting (None: the bundle's default) on the demo and the recordings."""
    cfg = Config()
    if hop is not None:
        cfg.detection.hop_seconds = hop
    if smoothing is not None:
        cfg.detection.smoothing_windows = smoothing
    cfg.detection.apply_bundle_defaults(load_bundle(model).detection_defaults)
    bundle, runner = open_model(model, cfg.model.threads, cfg.detection.hop_seconds)
    start_runner = start_runner_for(bundle, cfg.detection, cfg.model.threads)
    files = _labelled_files(recordings)
    out: dict[str, dict] = {"hop_seconds": cfg.detection.hop_seconds, "smoothing_windows": cfg.detection.smoothing_windows}
    for part in ("demo", "recordings"):
        found: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        correct: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        events_by_label: dict[str, int] = defaultdict(int)
        minutes = 0.0
        for key, (path, occurrences) in sorted(files.items()):
            if not key.startswith(part):
                continue
            r = classify_file(path, bundle, runner, cfg, warm_start=cfg.detection.warm_start, start_runner=start_runner)
            minutes += r.duration_s / 60
            events = [(e["label"], e["start_s"], e["end_s"] if e["end_s"] is not None else e["start_s"]) for e in r.events]
            for label, e0, e1 in events:
                events_by_label[label] += 1
                cls = AS_CLASS.get(label)
                if cls is not None:
                    correct[cls][1] += 1
                    correct[cls][0] += any(c == cls and _overlaps(e0 - bundle.window_seconds, e1, a, b) for c, a, b in occurrences)
            for cls, a, b in occurrences:
                if cls in AS_CLASS.values():
                    found[cls][1] += 1
                    found[cls][0] += any(AS_CLASS.get(lab) == cls and _overlaps(e0 - bundle.window_seconds, e1, a, b)
                                         for lab, e0, e1 in events)  # fmt: skip
        out[part] = {
            "minutes": round(minutes, 2),
            "events": dict(sorted(events_by_label.items())),
            "found": {c: f"{v[0]}/{v[1]}" for c, v in found.items()},
            "correct_events": {c: f"{v[0]}/{v[1]}" for c, v in correct.items()},
            "other_label_events": sum(n for lab, n in events_by_label.items() if lab not in AS_CLASS),
        }
    return out


def _setting(text: str) -> tuple[float, int]:
    hop, smoothing = text.split(",")
    DetectionConfig(hop_seconds=float(hop), smoothing_windows=int(smoothing))  # the config's own bounds
    return float(hop), int(smoothing)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.audioset_hop", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "audioset")
    ap.add_argument("--recordings", type=Path, default=REPO.parent / "shared" / "data" / "recordings")
    ap.add_argument("--setting", type=_setting, action="append", metavar="HOP,SMOOTHING",
                    help="detection.hop_seconds,smoothing_windows (repeatable; default: the bundle's own)")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not (args.recordings / "labels.csv").is_file():
        raise SystemExit(f"tools.audioset_hop: {args.recordings}/labels.csv not found (the labelled street recordings)")
    settings = args.setting or [(None, None)]
    results = [run(args.model, args.recordings, hop, smoothing) for hop, smoothing in settings]
    text = json.dumps(results, indent=1)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
