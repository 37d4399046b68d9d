"""The `soundmon` command: run, classify, devices, bench, train, evaluate.

Every subcommand imports its module lazily, so `soundmon classify` never loads the daemon's
MQTT code and nothing but `train`/`evaluate` loads TensorFlow. Errors the user can fix end
with one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from monitor.errors import SoundmonError

__all__ = ["main"]


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, default=None,
                   help="YAML configuration (default: built-in defaults; see config.yaml)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soundmon",
        description="Recognise urban sounds from a microphone and publish detections over MQTT.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="run the daemon (microphone or a file)")
    _add_config(run)
    run.add_argument("--source", default="mic", help="'mic' (default) or an audio file path")
    run.add_argument("--pace", choices=["realtime", "fast"], default="realtime",
                     help="with a file source: real speed or as fast as the CPU allows")  # fmt: skip
    run.add_argument("--model", type=Path, default=None, help="model bundle (overrides model.path)")
    run.add_argument("--print", dest="print_events", action="store_true",
                     help="also print each detection to stdout")  # fmt: skip
    run.add_argument("--repeat", type=int, default=1, metavar="N",
                     help="with a file source: play it N times back to back as one stream (soak runs)")  # fmt: skip
    run.add_argument("--report", type=Path, default=None, metavar="PATH",
                     help="for benchmarks: when the run ends, write its timings (CPU, time per stage, "
                          "first window result) as JSON to PATH; what `soundmon bench` reads")  # fmt: skip

    cls = sub.add_parser("classify", help="classify recordings with the daemon's pipeline")
    cls.add_argument("paths", nargs="+", metavar="PATH", help="audio files (wav, flac, ogg, mp3, ...)")
    cls.add_argument("--model", type=Path, default=None, help="model bundle (default: shipped model)")
    _add_config(cls)
    cls.add_argument("--json", action="store_true", help="one JSON object per file per line")

    sub.add_parser("devices", help="list audio input devices and the rates they accept")

    bench = sub.add_parser("bench", help="measure the pipeline's speed and memory (see README)")
    bench.add_argument("args", nargs=argparse.REMAINDER)

    for name, helptext in (("train", "train a model (needs the 'train' extra)"),
                           ("evaluate", "evaluate a model on a dataset (needs the 'train' extra)")):  # fmt: skip
        p = sub.add_parser(name, help=helptext, add_help=False)
        p.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _load_config(path: Path | None):
    from monitor.config import load_config

    return load_config(path)


def _open_model(cfg, override: Path | None, config_path: Path | None = None):
    """Bundle + runner from --model, model.path or the shipped model, checked against the config
    (`config_path`, the file it came from, names it in an error; None: the built-in defaults).

    Also puts numpy's BLAS on one thread: both commands that open a model stream audio through
    tiny matrix products, where BLAS worker threads only spin (`monitor.blas`)."""
    from monitor.blas import single_threaded_blas
    from monitor.bundle import load_bundle
    from monitor.config import check_model_path, config_source
    from monitor.runner import open_model

    single_threaded_blas()
    if override is not None:
        cfg.model.path = override
    check_model_path(cfg)
    # the hop decides which of the bundle's models runs (open_model), so the bundle's own detection
    # defaults are taken first (its JSON alone: one small file read twice)
    cfg.detection.apply_bundle_defaults(load_bundle(cfg.model.resolved_path()).detection_defaults)
    bundle, runner = open_model(cfg.model.resolved_path(), num_threads=cfg.model.threads,
                                hop_seconds=cfg.detection.hop_seconds)  # fmt: skip
    cfg.check_against_labels(bundle.labels, source=config_source(config_path), default_watch=bundle.watch)
    return bundle, runner


def _cmd_classify(args: argparse.Namespace) -> int:
    from monitor.classify import run_classify

    cfg = _load_config(args.config)
    bundle, runner = _open_model(cfg, args.model, args.config)
    return run_classify(args.paths, bundle, runner, cfg, as_json=args.json)


def _cmd_devices(args: argparse.Namespace) -> int:
    from monitor.devices import format_devices, list_input_devices

    print(format_devices(list_input_devices()))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from monitor.config import check_state_dir
    from monitor.daemon import run_daemon

    cfg = _load_config(args.config)
    check_state_dir(cfg)
    bundle, runner = _open_model(cfg, args.model, args.config)
    # Each label becomes a topic level (<base>/state/<label>, its discovery config): a bundle
    # whose label the broker would reject is refused here, before anything connects.
    cfg.mqtt.check_label_topics(bundle.labels, source=f"model {cfg.model.resolved_path()}")
    return run_daemon(cfg, bundle, runner, source=args.source, pace=args.pace, config_path=args.config,
                      model_override=args.model, print_events=args.print_events, repeat=args.repeat,
                      report=args.report)  # fmt: skip


def _cmd_bench(args: argparse.Namespace) -> int:
    from monitor.bench import bench_main

    return bench_main(args.args)


def _cmd_training(args: argparse.Namespace) -> int:
    try:
        from training import cli as training_cli
    except ImportError as exc:
        raise SoundmonError(
            f"soundmon {args.command} needs the training extra ({exc.name} is missing): "
            "pip install 'soundmon[train]'"
        ) from None
    entry = training_cli.train_main if args.command == "train" else training_cli.evaluate_main
    return entry(args.args)


PASSTHROUGH = ("bench", "train", "evaluate")

COMMANDS = {
    "run": _cmd_run,
    "classify": _cmd_classify,
    "devices": _cmd_devices,
    "bench": _cmd_bench,
    "train": _cmd_training,
    "evaluate": _cmd_training,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        # These subcommands own their options (argparse REMAINDER drops leading --options).
        args = argparse.Namespace(command=argv[0], args=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except SoundmonError as exc:
        print(f"soundmon {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
