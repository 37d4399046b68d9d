"""A real, tiny int8 bundle for tests: a small CNN trained on the test clips and exported.

Use it with `from tests.fixtures_model import tiny_bundle  # noqa: F401`; the fixture returns the
bundle path without suffix (`.../tiny.tflite` + `.../tiny.json`, loadable by `load_bundle`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

CLIPS = Path(__file__).resolve().parent / "data" / "clips"


def build_tiny_bundle(out_dir: Path, epochs: int = 6, seed: int = 0, arch: str = "tiny") -> Path:
    """Train the `tiny` CNN on tests/data/clips and export an int8 bundle to `out_dir/tiny`.

    With a streaming-exact `arch` (`tiny_s`) the bundle also carries its streaming model."""
    from monitor.frontend import FrontendParams
    from training.datasets import read_dataset
    from training.export import convert_int8, representative_windows, write_bundle
    from training.features import compute_features
    from training.models import count_macs
    from training.train import TrainConfig, set_threads, train_cnn

    set_threads(2)
    params = FrontendParams()
    ds = read_dataset(CLIPS)
    feats = compute_features(
        ds.clips, params, cache_dir=out_dir / "cache", workers=1, progress=False
    )
    y = ds.y()
    cfg = TrainConfig(
        arch=arch, epochs=epochs, batch_size=8, lr=5e-3, seed=seed, eval_every=0, warmup_epochs=1
    )
    model, norm, _ = train_cnn(feats, y, len(ds.labels), cfg, params, progress=False)
    rep = representative_windows(feats, y, len(ds.labels), norm, params, n=40, seed=seed)
    base = out_dir / "tiny"
    stream = None
    if arch == "tiny_s":
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
            "training": {"dataset": str(CLIPS), "clips": len(ds.clips), "dropout": cfg.dropout},
            # what `soundmon train` records: the data the body learnt from (its licence follows a reuse)
            "data": {"name": ds.name, "format": ds.format, "folds": ds.folds},
        },
    )
    from training.bundle_files import save_float_weights

    save_float_weights(model, base.with_name("tiny.weights.h5"))
    return base


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    if not (CLIPS / "metadata.csv").is_file():
        pytest.skip("tests/data/clips (the test clips) not present")
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny_bundle"))


@pytest.fixture(scope="session")
def tiny_stream_bundle(tmp_path_factory) -> Path:
    """The tiny bundle with a streaming-exact body and its streaming model."""
    if not (CLIPS / "metadata.csv").is_file():
        pytest.skip("tests/data/clips (the test clips) not present")
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny_stream_bundle"), arch="tiny_s")
