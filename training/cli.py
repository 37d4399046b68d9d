"""`soundmon train` and `soundmon evaluate` (also `python -m training.cli train|evaluate ...`)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from monitor.errors import SoundmonError

DEFAULT_ARCH = "cnn_spn_s23t1"  # the shipped body (models/urban10.md)

__all__ = ["command_line", "evaluate_main", "main", "train_main"]


def command_line(argv: list[str], prog: str) -> str:
    """The command as typed (shell-quoted), for the report and the model card."""
    return " ".join([prog] + [shlex.quote(a) for a in argv])


def _folds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"folds must be comma-separated integers, got {text!r}"
        ) from None


def _class_smoothing(text: str) -> dict[str, int]:
    """`LABEL[,LABEL...]=N` -> {label: N} (N windows averaged for those labels, in the range a
    bundle's smoothing may have)."""
    from monitor.bundle import BUNDLE_DETECTION_KEYS

    _, low, high = BUNDLE_DETECTION_KEYS["smoothing_windows"]
    labels, sep, n = text.rpartition("=")
    try:
        value = int(n)
    except ValueError:
        value = 0
    names = [x.strip() for x in labels.split(",") if x.strip()]
    if not sep or not names or not low <= value <= high:
        raise argparse.ArgumentTypeError(
            f"--class-smoothing wants LABEL[,LABEL...]=N with N from {low:g} to {high:g}, got {text!r}"
        )
    return dict.fromkeys(names, value)


def _window_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"window seconds must be a number, got {text!r}") from None
    if not 1.0 <= value <= 10.0:
        raise argparse.ArgumentTypeError(f"window seconds must be from 1 to 10, got {text}")
    return value


def _dataset_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--dataset",
        required=required,
        help="dataset root (UrbanSound8K, ESC-50 or a folder per class)",
    )
    p.add_argument(
        "--format",
        choices=["urbansound8k", "esc50", "folders"],
        help="default: detected from the layout",
    )
    p.add_argument(
        "--classes", help="comma-separated classes to keep (after renaming); default: all"
    )
    p.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                   help="rename a class, e.g. dog=dog_bark (repeat or comma-separate)")  # fmt: skip
    p.add_argument("--folds", type=_folds, help="comma-separated folds to use; default: all")
    p.add_argument(
        "--cache",
        help="feature cache directory (default: $SOUNDMON_CACHE or ~/.cache/soundmon/features)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for feature extraction (default: all cores)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="TensorFlow threads (default: all cores)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _read(args):
    from training.datasets import parse_classes, parse_renames, read_dataset

    return read_dataset(
        args.dataset,
        args.format,
        classes=parse_classes(args.classes),
        renames=parse_renames(args.rename),
        folds=args.folds,
    )


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="soundmon train", description="Train a soundmon model and export an int8 bundle."
    )
    _dataset_args(p)
    p.add_argument(
        "--out", default="models/model", help="bundle path without suffix (default: models/model)"
    )
    p.add_argument("--cv", nargs="?", const="all", default=None, metavar="FOLDS",
                   help="leave-one-fold-out cross-validation first (optionally over these comma-separated folds)")  # fmt: skip
    p.add_argument(
        "--arch",
        default=DEFAULT_ARCH,
        help=f"{DEFAULT_ARCH} (default, the shipped body; streaming-exact: the bundle also gets a streaming model "
        "that computes only what each 0.5 s hop adds), sbcnn (the Salamon-Bello plain CNN, a yardstick), mlp "
        "(the MFCC baseline: metrics only, no bundle), or tiny / tiny_s (test sizes); the experiments' other "
        "bodies are retired (models/urban10_experiments.md names the commit that has them)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs (default: 60; with --init-from enough for ~600 steps, at least 30)",
    )
    p.add_argument("--batch-size", type=int, default=None,
                   help="clips (or, with --backbone, windows) per optimiser step (default 32; 64 with --backbone)")  # fmt: skip
    p.add_argument(
        "--window-seconds",
        type=_window_seconds,
        default=4.0,
        help="analysis window in seconds, 1-10 (default 4.0; 1.0 makes a start model for "
        "detection.fast_start_threshold, see python -m training.attach_start: up to 1.5 s its "
        "streaming model steps every 0.25 s, as the daemon checks it every half hop)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default 3e-3; 1e-3 with --init-from)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--class-smoothing",
        type=_class_smoothing,
        action="append",
        default=[],
        metavar="LABEL[,LABEL...]=N",
        help="write into every bundle of the run that these labels average N windows before the "
        "threshold test (the detector default the bundle is calibrated for, e.g. the steady sounds "
        "of models/urban10: air_conditioner,children_playing,drilling,engine_idling,jackhammer,"
        "street_music=7); repeatable",
    )
    p.add_argument("--no-augment", action="store_true", help="switch augmentation off")
    p.add_argument(
        "--augment",
        metavar="LIST",
        help="only these augmentations (comma-separated: time_shift, onset, gain, mix, "
        "background, stretch, pitch, eq, masks); default: all but eq",
    )
    p.add_argument(
        "--no-baseline", action="store_true", help="skip the MFCC-MLP baseline in cross-validation"
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="trainings at once with --cv (CV folds and the final model, one process each, "
        "cores shared out); default: the number of cores",
    )
    p.add_argument(
        "--init-from", help="reuse the convolutional body of this bundle (needs its .weights.h5)"
    )
    p.add_argument(
        "--report-dir", help="where metrics.json and the PNGs go (default: next to --out)"
    )
    p.add_argument(
        "--recordings",
        help="after export, run the streaming check on full recordings with a labels.csv "
        "(e.g. ../shared/data/recordings) and put it in the model card",
    )
    p.add_argument(
        "--experiments", help="markdown file whose text goes into the model card's 'What was tried'"
    )
    t = p.add_argument_group("transfer learning (--backbone)")
    t.add_argument("--backbone", choices=["yamnet"],
                   help="train a head on this pretrained network's embedding instead of a CNN from scratch: "
                   "yamnet (AudioSet; 0.975 s windows of the yamnet front-end); the bundle is the whole network")  # fmt: skip
    t.add_argument("--backbone-weights", metavar="PATH",
                   help="YAMNet's TF Hub TFLite export (default: $SOUNDMON_YAMNET or ../shared/models/yamnet.tflite)")  # fmt: skip
    t.add_argument("--fine-tune-layers", type=int, default=0, metavar="N",
                   help="also fine-tune the backbone's top N layers (of 14) with the head, end to end (default 0: head only)")  # fmt: skip
    t.add_argument(
        "--fine-tune-epochs", type=int, default=4, help="epochs of that fine-tuning (default 4)"
    )
    t.add_argument("--aug-copies", type=int, default=4,
                   help="augmented windows per clip cached for head training (default 4; 0 with --no-augment)")  # fmt: skip
    t.add_argument(
        "--head-hidden",
        type=int,
        default=0,
        help="hidden units of the head (default 0: a linear softmax head)",
    )
    t.add_argument("--clip-score", choices=["auto", "mean", "max"], default="auto",
                   help="a clip's score over its windows (default auto: the better by CV, else mean)")  # fmt: skip
    from training.distill_cli import add_distill_args

    add_distill_args(p)
    return p


def train_main(argv: list[str]) -> int:
    args = _train_parser().parse_args(argv)
    try:
        return _train(args, argv)
    except SoundmonError as exc:
        print(f"soundmon train: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("soundmon train: interrupted", file=sys.stderr)
        return 130


def _augment(args):
    """--no-augment / --augment LIST / the defaults, as an AugmentConfig."""
    from training.augment import AugmentConfig
    from training.datasets import DatasetError

    if args.no_augment:
        return AugmentConfig.off()
    if not args.augment:
        return AugmentConfig()
    try:
        return AugmentConfig.only([n.strip() for n in args.augment.split(",") if n.strip()])
    except ValueError as exc:
        raise DatasetError(f"--augment: {exc}") from None


def _train(args, argv) -> int:
    from training.datasets import DatasetError

    dataset = _read(args)
    if args.batch_size is not None and args.batch_size < 1:
        raise DatasetError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.backbone:
        return _train_transfer(args, dataset, argv)
    args.batch_size = args.batch_size or 32
    if args.arch == "mlp":
        return _train_mlp_only(args, dataset)
    from training.models import ARCHS
    from training.train import TrainConfig, set_threads
    from training.train_job import TrainJob, run_training

    if args.arch not in ARCHS:
        raise DatasetError(f"--arch {args.arch!r}: choose one of {sorted(ARCHS) + ['mlp']} (retired experiments: "
                           "models/urban10_experiments.md names the commit that has them)")  # fmt: skip
    if args.init_from:
        from training.bundle_files import find_init_bundle

        args.init_from = str(find_init_bundle(args.init_from))
    set_threads(args.threads or os.cpu_count())
    fine = bool(args.init_from)
    epochs = args.epochs
    if epochs is None:
        epochs = 60
        if fine:
            # Small user sets give few steps per epoch: aim for ~600 optimiser steps in all.
            steps = max(1, len(dataset.clips) // args.batch_size)
            epochs = max(30, -(-600 // steps))
    cfg = TrainConfig(
        arch=args.arch,
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr or (1e-3 if fine else 3e-3),
        seed=args.seed,
        augment=_augment(args),
        freeze_body_epochs=max(5, epochs // 6) if fine else 0,
        window_seconds=args.window_seconds,
        class_smoothing=_checked_class_smoothing(args.class_smoothing, dataset.labels),
    )
    cv = None
    if args.cv:
        cv = dataset.folds if args.cv == "all" else _folds(args.cv)
    experiments = ""
    if args.experiments:
        try:
            experiments = Path(args.experiments).read_text()
        except OSError as exc:
            raise DatasetError(f"--experiments: {exc}") from None
    job = TrainJob(
        dataset=dataset,
        out=Path(args.out),
        cfg=cfg,
        cv_folds=cv,
        baseline=not args.no_baseline,
        init_from=args.init_from,
        cache_dir=args.cache,
        workers=args.workers,
        report_dir=Path(args.report_dir) if args.report_dir else None,
        progress=not args.no_progress,
        command=command_line(argv, "soundmon train"),
        experiments=experiments,
        recordings=args.recordings,
        jobs=max(1, args.jobs if args.jobs is not None else (os.cpu_count() or 1)) if cv else 1,
    )
    if args.teacher:  # distillation from a teacher bundle: training/distill.py
        from training.distill import train_distill

        return train_distill(job, args)
    run_training(job)
    return 0


def _checked_class_smoothing(specs: list[dict[str, int]], labels: list[str]) -> dict[str, int]:
    """The `--class-smoothing` options merged; a label the dataset does not have is a DatasetError."""
    from training.datasets import DatasetError

    merged = {k: v for spec in specs for k, v in spec.items()}
    unknown = sorted(set(merged) - set(labels))
    if unknown:
        raise DatasetError(f"--class-smoothing: {unknown} not among the dataset's labels {labels}")
    return merged


def _train_transfer(args, dataset, argv) -> int:
    """`--backbone yamnet`: a head on a pretrained embedding (training/transfer.py)."""
    from training.datasets import DatasetError

    if args.init_from or args.arch != DEFAULT_ARCH or args.window_seconds != 4.0:
        raise DatasetError(
            "--backbone takes neither --init-from, --arch nor --window-seconds (its window is the backbone's)"
        )
    from training.train import set_threads
    from training.transfer import (
        TransferConfig,
        TransferJob,
        default_backbone_weights,
        run_transfer,
    )

    set_threads(args.threads or os.cpu_count())
    weights = args.backbone_weights or default_backbone_weights()
    augment = _augment(args).with_(time_masks=0, freq_masks=0)
    cfg = TransferConfig(
        backbone=args.backbone,
        weights_path=str(weights or ""),
        head_hidden=args.head_hidden,
        epochs=args.epochs or 60,
        batch_size=args.batch_size or 64,  # the head trains on windows, ~12 per ESC clip
        lr=args.lr or 1e-3,
        seed=args.seed,
        augment=augment,
        aug_copies=args.aug_copies if augment.enabled else 0,
        fine_tune_layers=args.fine_tune_layers,
        fine_tune_epochs=args.fine_tune_epochs,
        clip_score=args.clip_score,
    )
    cv = None
    if args.cv:
        cv = dataset.folds if args.cv == "all" else _folds(args.cv)
    job = TransferJob(dataset=dataset, out=Path(args.out), cfg=cfg, cv_folds=cv, cache_dir=args.cache,
                      workers=args.workers, report_dir=Path(args.report_dir) if args.report_dir else None,
                      progress=not args.no_progress, command=command_line(argv, "soundmon train"))  # fmt: skip
    if args.experiments:
        try:
            job.experiments = Path(args.experiments).read_text()
        except OSError as exc:
            raise DatasetError(f"--experiments: {exc}") from None
    run_transfer(job)
    return 0


def _train_mlp_only(args, dataset) -> int:
    """`--arch mlp`: the MFCC-statistics baseline, leave-one-fold-out, metrics only (no bundle)."""
    import numpy as np

    from training.evaluation.clip_accuracy import metrics
    from training.evaluation.reports import write_metrics
    from training.features import compute_features
    from training.train import train_mlp

    feats = compute_features(
        dataset.clips, cache_dir=args.cache, workers=args.workers, progress=not args.no_progress
    )
    y = dataset.y()
    folds = np.array([c.fold for c in dataset.clips])
    cv = dataset.folds if args.cv in (None, "all") else _folds(args.cv)
    out = {"per_fold": []}
    for k in cv:
        tr, te = np.where(folds != k)[0], np.where(folds == k)[0]
        pred = train_mlp([feats[i] for i in tr], y[tr], len(dataset.labels), seed=args.seed)(
            [feats[i] for i in te]
        )
        m = metrics(y[te], pred, dataset.labels)
        out["per_fold"].append({"fold": k, **m})
        print(
            f"fold {k}: accuracy {100 * m['accuracy']:.1f}%, macro {100 * m['macro_accuracy']:.1f}%"
        )
    report_dir = Path(args.report_dir or Path(args.out).parent)
    write_metrics(report_dir / f"{Path(args.out).name}_mlp_metrics.json", out)
    return 0


def _sure_at(text: str) -> list[float]:
    # imported when the option is used: this module loads no evaluation code (nor numpy) up front
    from training.evaluation.labelled_onsets import sure_at_arg

    return sure_at_arg(text)


def _evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="soundmon evaluate",
        description="Score a bundle on a dataset: int8 through the daemon's runner, float too if "
        "<model>.weights.h5 lies next to the bundle.",
    )
    p.add_argument(
        "--model", required=True, help="bundle path (models/urban10 or models/urban10.tflite)"
    )
    _dataset_args(p, required=False)
    p.add_argument(
        "--recordings",
        help="also run the streaming check on full recordings with a labels.csv "
        "(e.g. ../shared/data/recordings): window accuracy, and the daemon's pipeline and "
        "detector as a detector (segment F1, other-class alarms per minute, onset latency, "
        "events shorter than a hop), split into recordings the model heard and did not",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="with --recordings: the daemon configuration whose detection settings to use "
        "(default: the daemon's defaults)",
    )
    p.add_argument(
        "--sure-at",
        type=_sure_at,
        default=(),
        metavar="T,...",
        help="with --recordings: also how soon the start model is sure of a labelled onset at all "
        "(ranks its class top at >= T): the floor under any detection setting's latency",
    )
    p.add_argument(
        "--cv",
        action="store_true",
        help="re-score the cross-validation instead: each fold model that `soundmon train --cv` "
        "kept in <model>_cv/ on its held-out fold (the model card's int8 CV tables)",
    )
    p.add_argument(
        "--out",
        default="runs/evaluate",
        help="directory for metrics.json, per_class.md, confusion.png",
    )
    p.add_argument(
        "--hop",
        type=float,
        default=0.5,
        help="window hop in seconds for clips longer than a window",
    )
    return p


def evaluate_main(argv: list[str]) -> int:
    parser = _evaluate_parser()
    args = parser.parse_args(argv)
    if not args.dataset and not args.recordings:
        print("soundmon evaluate: give --dataset and/or --recordings", file=sys.stderr)
        return 2
    if args.cv and not args.dataset:
        print("soundmon evaluate: --cv needs --dataset (the held-out folds' clips)", file=sys.stderr)
        return 2
    lines = []
    try:
        from training.evaluation.reports import write_metrics

        if args.dataset:
            dataset = _read(args)
            print(dataset.summary(), file=sys.stderr)
        if args.dataset and args.cv:
            from training.evaluation.cv_accuracy import cv_clip_accuracy, format_cv_table

            res = cv_clip_accuracy(args.model, dataset, Path(args.out), args.cache, args.workers,
                                   not args.no_progress, args.hop)  # fmt: skip
            lines.append(format_cv_table(res))
            lines.append(f"wrote {args.out}/cv.md, cv_metrics.json, cv_confusion.png")
        elif args.dataset:
            from training.evaluation.dataset_accuracy import clip_accuracy_on_dataset

            res = clip_accuracy_on_dataset(
                args.model,
                dataset,
                Path(args.out),
                args.cache,
                args.workers,
                not args.no_progress,
                args.hop,
                args.threads,
            )
            line = (
                f"int8 accuracy {100 * res['int8']['accuracy']:.1f}% "
                f"(macro {100 * res['int8']['macro_accuracy']:.1f}%)"
            )
            if "float" in res:
                line += (
                    f", float {100 * res['float']['accuracy']:.1f}% "
                    f"(macro {100 * res['float']['macro_accuracy']:.1f}%)"
                )
            lines.append(
                f"{line} on {res['int8']['n_clips']} clips; "
                f"wrote {args.out}/metrics.json, per_class.md, confusion.png"
            )
        if args.recordings:
            from training.evaluation.window_accuracy import window_accuracy_on_recordings

            st = window_accuracy_on_recordings(args.model, args.recordings, hop=args.hop)
            write_metrics(Path(args.out) / "streaming.json", st)

            def pct(x):
                return "-" if x is None else f"{100 * x:.1f}%"

            lines.append(
                f"streaming: labelled-window accuracy {pct(st['all']['window_accuracy'])} over "
                f"{st['all']['recordings']} recordings ({pct(st['unseen']['window_accuracy'])} on the "
                f"{st['unseen']['recordings']} never seen in training); wrote {args.out}/streaming.json"
            )
            from training.evaluation.detector_metrics import (
                detector_metrics_on_recordings,
                format_detector_lines,
            )

            det = detector_metrics_on_recordings(Path(args.model), Path(args.recordings), args.config, args.sure_at)
            write_metrics(Path(args.out) / "detector.json", det)
            lines += [f"detector, {line}" for line in format_detector_lines(det)]
            lines.append(f"wrote {args.out}/detector.json")
    except SoundmonError as exc:
        print(f"soundmon evaluate: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("soundmon evaluate: interrupted", file=sys.stderr)
        return 130
    for line in lines:
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("train", "evaluate"):
        print("usage: python -m training.cli {train|evaluate} ...", file=sys.stderr)
        return 2
    return (train_main if argv[0] == "train" else evaluate_main)(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
