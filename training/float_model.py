"""A bundle's float (Keras) model, rebuilt from its metadata and the `.weights.h5` kept beside it.

For `--init-from`, a CV fold's start and the float column of `soundmon evaluate`. Importing this
module does not import TensorFlow; rebuilding a model does.
"""

from __future__ import annotations

from pathlib import Path

from monitor.bundle import load_bundle
from monitor.errors import BundleError
from training.bundle_files import weights_path_for
from training.console import log

__all__ = ["load_float_model"]


def load_float_model(base: str | Path):
    """(Keras model, bundle) rebuilt from the bundle's meta and its `.weights.h5`, or (None, bundle)."""
    bundle = load_bundle(base)
    wpath = weights_path_for(base)
    arch = (bundle.meta.get("model") or {}).get("arch")
    if not wpath.is_file() or not arch:
        return None, bundle
    if (bundle.meta.get("model") or {}).get("backbone"):  # `soundmon train --backbone`: training/transfer.py
        from training.transfer import full_model_from_meta  # Keras

        try:
            model = full_model_from_meta(len(bundle.labels), bundle.meta)
        except BundleError as exc:
            log(f"note: no float model for {base}: {exc}")
            return None, bundle
        model.load_weights(wpath)
        return model, bundle
    from training.models import build_cnn  # Keras

    model = build_cnn(len(bundle.labels), bundle.window_frames, bundle.frontend.n_mels, arch,
                      (bundle.meta.get("training") or {}).get("dropout", 0.3))  # fmt: skip
    model.load_weights(wpath)
    return model, bundle
