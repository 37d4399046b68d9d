"""Name a start model in a bundle, so `detection.fast_start_threshold` can use it.

A start model is an ordinary bundle trained on short windows
(`soundmon train --window-seconds 1 ...`): it hears only the newest second of each window, so
it is sure of a sound that has just begun a hop or two before the 4 s model is. This writes
`"start_model": "<path relative to the JSON>"` into the main bundle's JSON, and into each of its
cross-validation fold bundles (`<model>_cv/foldK.json`) that has a start model of the same fold
(`<start>_cv/foldK.json`), so `python -m training.evaluation.onset_streams` measures fast start on models
that never heard the clips. Every pair is opened as the daemon opens it first (same labels and
front-end, a start window no longer than the main one); nothing is written if one fails.

`--start-weight W` also writes `"detection": {"start_model_weight": W}`: the start model's share of
each window's score in the detector (`monitor.detector`, rule 1), a calibration of the pair like the
bundle's thresholds, so it goes where they go. 0 (the default) removes it. `--fast-start-threshold T`
writes `"detection": {"fast_start_threshold": T}` alike: how sure this start model must be to open an
event depends on how its scores are calibrated, so the bundle carries it (unset: the daemon's 0.9).

    python -m training.attach_start --model models/urban10 --start models/urban10_start --start-weight 0.5 \
        --fast-start-threshold 0.75    (the shipped pair, as `make urban10` attaches it)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from monitor.bundle import BUNDLE_DETECTION_KEYS, bundle_paths, load_bundle
from monitor.errors import SoundmonError
from monitor.fast_start import open_start_model

__all__ = ["attach_start", "main"]

WEIGHT_KEY = "start_model_weight"
THRESHOLD_KEY = "fast_start_threshold"


def _pairs(model: Path, start: Path) -> list[tuple[Path, Path]]:
    """(main bundle, start bundle) paths without suffix: the bundles, then matching CV folds."""
    pairs = [(bundle_paths(model)[1].with_suffix(""), bundle_paths(start)[1].with_suffix(""))]
    model_cv = Path(f"{pairs[0][0]}_cv")
    start_cv = Path(f"{pairs[0][1]}_cv")
    for fold_json in sorted(model_cv.glob("fold*.json")):
        if (start_cv / fold_json.name).is_file():
            pairs.append((fold_json.with_suffix(""), (start_cv / fold_json.name).with_suffix("")))
    return pairs


def _check_range(option: str, key: str, value: float) -> None:
    """ValueError unless `value` lies in the bundle key's range (checked before anything is written)."""
    _, low, high = BUNDLE_DETECTION_KEYS[key]
    if not low <= value <= high:
        raise ValueError(f"{option} must be in [{low:g}, {high:g}], got {value:g}")


def attach_start(model: str | Path, start: str | Path, start_weight: float = 0.0,
                 fast_start_threshold: float | None = None) -> list[tuple[Path, str]]:  # fmt: skip
    """Write `start_model` (and `detection.start_model_weight`, when not 0, and
    `detection.fast_start_threshold`, when given) into the bundle at `model` and its folds;
    returns (JSON, reference) pairs. ValueError for a value outside the bundle's range."""
    _check_range("--start-weight", WEIGHT_KEY, start_weight)
    if fast_start_threshold is not None:
        _check_range("--fast-start-threshold", THRESHOLD_KEY, fast_start_threshold)
    planned: list[tuple[Path, str]] = []
    for main_path, start_path in _pairs(Path(model), Path(start)):
        json_path = bundle_paths(main_path)[1]
        ref = os.path.relpath(start_path, json_path.parent)
        bundle = load_bundle(main_path)
        trial = replace(bundle, start_model=ref, start_model_path=json_path.parent / ref)
        open_start_model(trial)  # refuses a start model the daemon would refuse
        planned.append((json_path, ref))
    for json_path, ref in planned:
        data = json.loads(json_path.read_text())
        data["start_model"] = ref
        detection = data.setdefault("detection", {})
        if start_weight:
            detection[WEIGHT_KEY] = float(start_weight)
        else:
            detection.pop(WEIGHT_KEY, None)
        if fast_start_threshold is not None:
            detection[THRESHOLD_KEY] = float(fast_start_threshold)
        else:
            detection.pop(THRESHOLD_KEY, None)
        if not detection:
            del data["detection"]
        json_path.write_text(json.dumps(data, indent=2) + "\n")
    return planned


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.attach_start", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the main bundle (its JSON gets the start_model key)")
    ap.add_argument("--start", required=True, help="the start model's bundle (trained with --window-seconds 1)")
    ap.add_argument("--start-weight", type=float, default=0.0, metavar="W",
                    help="the start model's share of each window's score (detection.start_model_weight; "
                         "0 = none, the default)")  # fmt: skip
    ap.add_argument("--fast-start-threshold", type=float, default=None, metavar="T",
                    help="the start model's score that opens an event (detection.fast_start_threshold; "
                         "default: none written, the daemon's 0.9)")  # fmt: skip
    args = ap.parse_args(argv)
    try:
        done = attach_start(args.model, args.start, args.start_weight, args.fast_start_threshold)
    except (SoundmonError, ValueError) as exc:
        print(f"attach_start: {exc}", file=sys.stderr)
        return 1
    for json_path, ref in done:
        print(f"{json_path}: start_model = {ref}" + (f", start_model_weight = {args.start_weight:g}" if args.start_weight else "")
              + (f", fast_start_threshold = {args.fast_start_threshold:g}" if args.fast_start_threshold is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
