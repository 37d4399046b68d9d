"""Several trainings of one recipe as one model: the members' mean scores in a single int8 graph.

Trainings of the same recipe with different seeds agree on what they have learnt and disagree on
what they have not: on unseen street recordings a lone training raised 1.3-1.7 other-class alarms
per minute, the mean of two 0.9-1.1 (models/urban10_experiments.md). Averaging inside one graph
keeps the bundle one model for the daemon: one `predict` per window and one streaming step per hop
(the members' states side by side, each member's under its own `state_NN` numbers), so nothing in
`monitor` knows about members. The members' Keras models are rebuilt from their bundles' kept
float weights (`<base>.weights.h5`); the ensemble keeps its own (all members' weights, in order).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

from monitor.bundle import ModelBundle, bundle_paths, load_bundle
from monitor.errors import BundleError, SoundmonError
from monitor.frontend import FrontendParams

__all__ = [
    "check_members",
    "ensemble_model",
    "ensemble_streaming_model",
    "load_members",
    "main",
    "merge_bundle",
    "merge_run",
]


def check_members(bundles: list[ModelBundle], names: list[str]) -> None:
    """Refuse members that are not one recipe's trainings: same labels, front-end, window,
    normalisation and body. One line, naming the first member that differs."""
    if len(bundles) < 2:
        raise BundleError("an ensemble needs at least two member bundles")
    ref = bundles[0]

    def key(b: ModelBundle) -> tuple:
        arch = (b.meta.get("model") or {}).get("arch")
        return (tuple(b.labels), b.frontend, b.window_frames, round(b.norm_mean, 9), round(b.norm_std, 9), arch)

    for b, name in zip(bundles[1:], names[1:], strict=True):
        if key(b) != key(ref):
            raise BundleError(
                f"{name}: not the same recipe as {names[0]} (labels, front-end, window, normalisation "
                "and body must match)"
            )


def load_members(bases: list[str | Path]) -> tuple[list, list[ModelBundle]]:
    """(Keras models, bundles) of the member bundles, each rebuilt from its kept float weights."""
    from training.float_model import load_float_model

    models, bundles = [], []
    for base in bases:
        model, bundle = load_float_model(base)
        if model is None:
            raise BundleError(f"{base}: no float weights (.weights.h5) or no model.arch to rebuild it from")
        models.append(model)
        bundles.append(bundle)
    check_members(bundles, [str(b) for b in bases])
    return models, bundles


def _as_member(model, i: int):
    """`model` under a unique name, so several copies of one body can sit in one graph."""
    import keras

    return keras.Model(model.input, model.output, name=f"member_{i}")


def ensemble_model(models: list):
    """The window model: one log-mel input, the members' mean softmax out."""
    import keras
    from keras import layers as L

    inp = keras.Input(models[0].input.shape[1:], name="logmel")
    outs = [_as_member(m, i)(inp) for i, m in enumerate(models)]
    return keras.Model(inp, L.Average(name="members_mean")(outs), name="ensemble")


def ensemble_streaming_model(models: list, window_frames: int, hop_frames: int) -> tuple[object, int]:
    """(Keras streaming model, MACs per hop): the members' streaming models side by side.

    Inputs `new_frames` (shared) and `state_NN`; outputs `probs` (the mean) and `state_NN`, the
    members' states numbered on from one member to the next, as `monitor.stream_runner` feeds them."""
    import keras
    from keras import layers as L

    from training.stream_export import _named_inputs, plan_stream, streaming_model

    new = keras.Input((hop_frames, *models[0].input.shape[2:]), name="new_frames")
    inputs, outputs, probs, n, macs = {"new_frames": new}, {}, [], 0, 0
    for i, model in enumerate(models):
        sm = streaming_model(model, window_frames, hop_frames)
        macs += plan_stream(model, window_frames, hop_frames).macs_per_hop
        own = sorted(k for k in _named_inputs(sm) if k != "new_frames")
        feed = {"new_frames": new}
        rename = {}
        for key in own:
            glob = f"state_{n:02d}"
            n += 1
            rename[key] = glob
            inputs[glob] = keras.Input(_named_inputs(sm)[key].shape[1:], name=glob)
            feed[key] = inputs[glob]
        res = keras.Model(sm.input, sm.output, name=f"member_{i}_stream")(feed)
        probs.append(res["probs"])
        outputs.update({rename[k]: v for k, v in res.items() if k != "probs"})
    outputs = {"probs": L.Average(name="members_mean")(probs), **outputs}
    return keras.Model(inputs, outputs, name="ensemble_stream"), macs


def mean_scores(models: list, windows: np.ndarray) -> np.ndarray:
    """The members' mean float scores of normalised windows (N, frames, mels, 1): the reference
    the int8 ensemble is checked against."""
    return np.mean([np.asarray(m.predict(windows, verbose=0)) for m in models], axis=0)


def _calibration(feats: list, y: np.ndarray, n_classes: int, bundle: ModelBundle, seed: int) -> np.ndarray:
    from training.export import representative_windows

    return representative_windows(feats, y, n_classes, (bundle.norm_mean, bundle.norm_std), bundle.frontend,
                                  bundle.window_seconds, seed=seed)  # fmt: skip


def merge_bundle(member_bases: list[Path], out: Path, feats: list, y: np.ndarray, meta: dict, seed: int = 0):
    """Write the ensemble bundle of `member_bases` at `out` (int8 window and streaming models
    calibrated on windows of `feats`, the clips the members trained on; the float weights beside
    them); return (bundle, int8 bytes, Keras ensemble, Keras members)."""
    from training.bundle_export import STREAM_CALIBRATION_WINDOWS
    from training.bundle_files import save_float_weights, weights_path_for
    from training.export import convert_int8, int8_tflite, write_bundle
    from training.stream_export import state_quant_mismatch, stream_representative

    models, bundles = load_members(member_bases)
    ref = bundles[0]
    ens = ensemble_model(models)
    rep = _calibration(feats, y, len(ref.labels), ref, seed)
    tfl = convert_int8(ens, rep)
    stream = None
    if all(b.stream_tflite_path is not None for b in bundles):
        sm, macs = ensemble_streaming_model(models, ref.window_frames, ref.stream_hop_frames)
        srep = stream_representative(sm, rep[:STREAM_CALIBRATION_WINDOWS], ref.stream_hop_frames)
        stfl = int8_tflite(sm, lambda: iter(srep))
        if state_quant_mismatch(stfl) is None:
            stream = (stfl, ref.stream_hop_frames, macs)
    detection = ref.to_json_dict().get("detection")
    meta = {**meta, **({"detection": detection} if detection else {})}
    bundle = write_bundle(out, tfl, ref.labels, (ref.norm_mean, ref.norm_std), ref.frontend, ref.window_seconds,
                          thresholds=dict(ref.thresholds), meta=meta, stream=stream)  # fmt: skip
    save_float_weights(ens, weights_path_for(out))
    return bundle, len(tfl), ens, models


def _member_report(base: Path) -> dict:
    """The training report `soundmon train` wrote beside a member (`<name>_metrics.json`)."""
    tflite, _ = bundle_paths(base)
    path = tflite.with_name(f"{tflite.stem}_metrics.json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{base}: no training report {path.name} beside it ({exc.__class__.__name__})") from None


def _fold_entry(k: int, ens, bundle: ModelBundle, tef: list, y_te: np.ndarray, train_clips: int, t: dict):
    """A CV fold's report entry (as `training.fold_tasks.FoldTask` makes it) and its float and
    int8 held-out scores."""
    from training.evaluation.clip_accuracy import metrics, predict_int8
    from training.train import predict_float

    norm = (bundle.norm_mean, bundle.norm_std)
    sf = predict_float(ens, tef, norm, bundle.frontend, bundle.window_seconds, t.get("hop_seconds", 0.5))
    sq = predict_int8(bundle, tef, t.get("hop_seconds", 0.5), progress=False)
    entry = {
        "fold": k,
        "n_clips": len(tef),
        "train_clips": train_clips,
        "train_seconds": 0.0,
        "float": metrics(y_te, sf, bundle.labels),
        "int8": metrics(y_te, sq, bundle.labels),
        "int8_float_agreement": float(np.mean(sf.argmax(1) == sq.argmax(1))),
    }
    return entry, sf, sq


def merge_run(members: list[Path], dataset: Path, out: Path, report_dir: Path | None = None,
              recordings: Path | None = None, command: str = "") -> dict:  # fmt: skip
    """Merge the members' final bundles into `out` and each CV fold they all kept into
    `<out>_cv/foldK` (scoring the held-out fold as `soundmon train --cv` does); write the report
    (`<name>_metrics.json`) and the model card; return the report."""
    from training.bundle_files import cv_dir_for
    from training.card import write_card
    from training.console import log
    from training.datasets import read_dataset
    from training.evaluation.latency import measure_latency, measure_stream_latency
    from training.evaluation.reports import write_metrics
    from training.evaluation.window_accuracy import window_accuracy_on_recordings
    from training.features import compute_features
    from training.models import count_macs
    from training.train_job import _bundle_meta, _plot_cv, _summarise_folds

    t_start = time.perf_counter()
    check_members([load_bundle(m) for m in members], [str(m) for m in members])  # before any work
    reports = [_member_report(m) for m in members]
    first = load_bundle(members[0])
    data_folds = (first.meta.get("data") or {}).get("folds")
    ds = read_dataset(dataset, folds=data_folds)
    if list(ds.labels) != list(first.labels):
        raise BundleError(f"{dataset}: its labels are not the members' ({', '.join(first.labels)})")
    feats = compute_features(ds.clips, FrontendParams(), first.window_seconds, progress=False)
    y = ds.y()
    folds = np.array([c.fold for c in ds.clips])
    seed = int(reports[0]["training"].get("seed", 0))
    report = copy.deepcopy(reports[0])
    report_dir = report_dir or out.parent
    report_dir.mkdir(parents=True, exist_ok=True)
    report["name"] = out.name
    report["command"] = command or reports[0]["command"]
    report["ensemble"] = {
        "members": [
            {"path": str(m), "seed": r["training"].get("seed"), "command": r["command"],
             "cv_int8_mean": ((r.get("cv") or {}).get("summary") or {}).get("int8_accuracy_mean"),
             "cv_float_mean": ((r.get("cv") or {}).get("summary") or {}).get("float_accuracy_mean"),
             "streaming_unseen": ((r.get("streaming") or {}).get("unseen") or {}).get("window_accuracy")}
            for m, r in zip(members, reports, strict=True)
        ],  # fmt: skip
    }
    cv_folds = [k for k in (reports[0].get("cv") or {}).get("folds", [])
                if all((cv_dir_for(m) / f"fold{k}.json").is_file() for m in members)]  # fmt: skip
    if cv_folds:
        cv_dir = cv_dir_for(out)
        cv_dir.mkdir(parents=True, exist_ok=True)
        results = []
        for k in cv_folds:
            tr, te = np.where(folds != k)[0], np.where(folds == k)[0]
            fold_bases = [cv_dir_for(m) / f"fold{k}" for m in members]
            fold_meta = {key: v for key, v in load_bundle(fold_bases[0]).meta.items()
                         if key in ("cv", "data", "training")}  # fmt: skip
            fold_meta["model"] = {"arch": report["arch"], "members": len(members)}
            bundle, _, ens, _ = merge_bundle(fold_bases, cv_dir / f"fold{k}", [feats[i] for i in tr], y[tr],
                                          fold_meta, seed)  # fmt: skip
            entry, sf, sq = _fold_entry(k, ens, bundle, [feats[i] for i in te], y[te], len(tr), reports[0]["training"])
            hist = reports[0]["cv"]["histories"].get(f"fold {k}", {})
            results.append((entry, hist, sf, sq, None))
            log(f"CV fold {k}: ensemble of {len(members)}: float {100 * entry['float']['accuracy']:.1f}%, "
                f"int8 {100 * entry['int8']['accuracy']:.1f}%")  # fmt: skip
        report["cv"] = _summarise_folds(cv_folds, results, y, folds, list(ds.labels))
        _plot_cv(report, report_dir, cv_folds, list(ds.labels))
    else:
        report.pop("cv", None)
    meta = _bundle_meta(report)
    meta["model"] = {"arch": report["arch"], "members": len(members)}
    bundle, nbytes, ens, models = merge_bundle(members, out, feats, y, meta, seed)
    report["model"] = {"arch": report["arch"], "members": len(members), "params": int(ens.count_params()),
                       "macs_per_window": sum(count_macs(m) for m in models),
                       "tflite_bytes": nbytes}  # fmt: skip
    report["latency"] = measure_latency(bundle)
    if bundle.stream_tflite_path is not None:
        report["stream"] = measure_stream_latency(bundle)
    report["cost"] = {**reports[0].get("cost", {}), "ensemble_seconds": time.perf_counter() - t_start,
                      "member_total_seconds": sum((r.get("cost") or {}).get("total_seconds", 0) for r in reports)}  # fmt: skip
    json_path = bundle_paths(out)[1]
    data = json.loads(json_path.read_text())
    data.update({"model": report["model"], "latency": report["latency"], "cost": report["cost"],
                 "ensemble": report["ensemble"]})  # fmt: skip
    if recordings:
        report["streaming"] = window_accuracy_on_recordings(out, recordings, train_folds=ds.folds)
        data["streaming"] = {k: report["streaming"][k] for k in ("all", "seen", "unseen", "hop_seconds")}
    else:
        report.pop("streaming", None)
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    load_bundle(out)
    tflite_path = bundle_paths(out)[0]
    report["bundle"] = {"tflite": str(tflite_path), "json": str(json_path)}
    write_metrics(report_dir / f"{report['name']}_metrics.json", report)
    write_card(tflite_path.with_suffix(".md"), report)
    log(f"wrote {tflite_path} (mean of {len(members)} trainings, {nbytes / 1024:.0f} KiB)"
        + (f"; CV int8 {100 * report['cv']['summary']['int8_accuracy_mean']:.1f}%" if "cv" in report else ""))  # fmt: skip
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.ensemble", description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", nargs="+", required=True, type=Path,
                    help="bundles trained by one recipe with different seeds (`soundmon train ... --seed N`), "
                         "each with its .weights.h5 and <name>_metrics.json (and <name>_cv/ for the CV)")  # fmt: skip
    ap.add_argument("--dataset", required=True, type=Path, help="the dataset the members trained on (calibration, CV)")
    ap.add_argument("--out", required=True, type=Path, help="the ensemble bundle to write, e.g. models/urban10")
    ap.add_argument("--report-dir", type=Path, help="where <name>_metrics.json and the plots go (default: beside --out)")
    ap.add_argument("--recordings", type=Path, help="labelled recordings: window accuracy on full recordings")
    args = ap.parse_args(argv)
    command = "python -m training.ensemble " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        merge_run(args.members, args.dataset, args.out, args.report_dir, args.recordings, command)
    except SoundmonError as exc:
        print(f"ensemble: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
