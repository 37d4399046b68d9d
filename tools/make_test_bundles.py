"""Regenerate the tiny int8 bundles the tests run (tests/data/bundles/), trained on tests/data/clips.

The unit tests load these committed files instead of training a model at test time, so they run
in seconds without TensorFlow. This script (it needs the `train` extra) makes them again:

    python -m tools.make_test_bundles            # rewrite tests/data/bundles/
    python -m tools.make_test_bundles --out DIR  # write them elsewhere (the integration test does)

Two bundles, both named `tiny` (the daemon's messages say `"model": "tiny"`):

- `tiny/`: the `tiny` body, padded along time (whole windows only): `tiny.tflite`, `tiny.json`
  and `tiny.weights.h5` (the float weights that `--init-from` and the float/int8 tests read);
- `tiny_stream/`: the streaming-exact `tiny_s` body, with `tiny.stream.tflite` as well.

Six epochs on the 20 clips with a fixed seed: on one machine a run reproduces the files byte for
byte (bar the `created` time); TensorFlow on another CPU may round differently, so
tests/test_make_test_bundles.py checks that a fresh run scores like the committed files, not that it
is identical. Regenerate after a change to the bundle format, the front-end, the int8 export or
the `tiny` / `tiny_s` layouts (training/models.py), and commit the result (about 220 KB).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO / "tests" / "data" / "clips"
BUNDLES = REPO / "tests" / "data" / "bundles"
# directory -> body: the window-only test bundle and the streaming one
LAYOUTS = {"tiny": "tiny", "tiny_stream": "tiny_s"}
NAME = "tiny"


def build_tiny_bundle(out_dir: Path, arch: str = "tiny", epochs: int = 6, seed: int = 0) -> Path:
    """Train body `arch` on tests/data/clips and export an int8 bundle to `out_dir/tiny`; return
    that path (no suffix). A streaming-exact `arch` (`tiny_s`) also gets its streaming model."""
    from monitor.frontend import FrontendParams
    from training.bundle_files import save_float_weights
    from training.datasets import read_dataset
    from training.export import convert_int8, representative_windows, write_bundle
    from training.features import compute_features
    from training.models import ARCHS, count_macs
    from training.train import TrainConfig, set_threads, train_cnn

    set_threads(2)
    params = FrontendParams()
    ds = read_dataset(CLIPS)
    with tempfile.TemporaryDirectory() as cache:
        feats = compute_features(ds.clips, params, cache_dir=Path(cache), workers=1, progress=False)
    y = ds.y()
    cfg = TrainConfig(arch=arch, epochs=epochs, batch_size=8, lr=5e-3, seed=seed, eval_every=0, warmup_epochs=1)
    model, norm, _ = train_cnn(feats, y, len(ds.labels), cfg, params, progress=False)
    rep = representative_windows(feats, y, len(ds.labels), norm, params, n=40, seed=seed)
    base = Path(out_dir) / NAME
    stream = None
    if ARCHS[arch].get("time_valid"):
        from training.stream_export import stream_part

        stream = stream_part(model, rep[:10], params.frames_for(4.0), 50)
    write_bundle(
        base,
        convert_int8(model, rep),
        ds.labels,
        norm,
        params,
        stream=stream,
        meta={
            "model": {"arch": arch, "macs_per_window": count_macs(model)},
            "training": {"dataset": str(CLIPS.relative_to(REPO)), "clips": len(ds.clips), "dropout": cfg.dropout},
            # what `soundmon train` records: the data the body learnt from (its licence follows a reuse)
            "data": {"name": ds.name, "format": ds.format, "folds": ds.folds},
        },
    )
    save_float_weights(model, base.with_name(f"{NAME}.weights.h5"))
    return base


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.make_test_bundles", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=BUNDLES, help=f"where to write them (default: {BUNDLES.relative_to(REPO)})")
    args = p.parse_args(argv)
    for directory, arch in LAYOUTS.items():
        base = build_tiny_bundle(args.out / directory, arch)
        print(f"wrote {base} ({arch})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
