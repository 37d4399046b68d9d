"""Files beside a bundle that training reads and writes: its float weights (`<bundle>.weights.h5`,
for `--init-from` and float evaluation) and its cross-validation folds (`<bundle>_cv/`).

Importing this module does not import TensorFlow (`save_float_weights` does, when called);
`training.float_model` rebuilds the Keras model from the weights.
"""

from __future__ import annotations

from pathlib import Path

from monitor.bundle import bundle_paths, load_bundle
from monitor.config import shipped_models_dir
from monitor.errors import BundleError

__all__ = ["cv_dir_for", "find_init_bundle", "save_float_weights", "weights_path_for"]


def weights_path_for(base: str | Path) -> Path:
    """The float weights kept next to a bundle (for `--init-from` and float evaluation)."""
    tflite, _ = bundle_paths(base)
    return tflite.with_name(tflite.stem + ".weights.h5")


def find_init_bundle(spec: str) -> Path:
    """The bundle `--init-from SPEC` names, with its float weights, or one line saying what is missing.

    SPEC is a bundle path (`models/home`, with or without a suffix) or the name of a shipped
    bundle (`urban10`, `models/urban10`): a path that is not there is looked up by its name among
    the shipped bundles, where the daemon finds them (`monitor.config.shipped_models_dir`, the
    `soundmon_models` package data), so the README's command works from any directory. Checked
    before any audio is decoded, so a wrong name costs nothing."""
    given = bundle_paths(spec)[1].with_suffix("")
    base = given
    if not given.with_suffix(".json").is_file():
        shipped = shipped_models_dir() / given.name
        if not shipped.with_suffix(".json").is_file():
            names = sorted(p.stem for p in shipped_models_dir().glob("*.json") if (p.with_suffix(".tflite")).is_file())
            raise BundleError(f"--init-from {spec}: no bundle {given}.json here and no shipped bundle named "
                              f"{given.name!r} (shipped: {', '.join(names)})")  # fmt: skip
        base = shipped
    weights = weights_path_for(base)
    if not weights.is_file():
        raise BundleError(f"--init-from {spec}: {weights} not found: --init-from needs the bundle's float weights, "
                          "which installed packages do not carry (a source checkout's models/ has urban10's; "
                          "or train with --backbone yamnet)")  # fmt: skip
    try:
        backbone = (load_bundle(base).meta.get("model") or {}).get("backbone")
    except BundleError as exc:
        raise BundleError(f"--init-from {spec}: {exc}") from None
    if backbone:
        raise BundleError(f"--init-from {spec}: a --backbone {backbone} bundle has no CNN body to reuse; "
                          f"train with --backbone {backbone} instead")  # fmt: skip
    return base


def save_float_weights(model, path: Path) -> None:
    """Save the layer weights only (a compiled model would also save the optimizer state, 3x larger)."""
    import keras

    # from_config, not clone_model: Keras 3 compiles a clone of a compiled model, and its optimizer
    # would be saved too.
    clean = keras.Model.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    clean.save_weights(path)


def cv_dir_for(bundle_base: str | Path) -> Path:
    """Where `soundmon train --cv` keeps the cross-validation folds' int8 bundles."""
    base = Path(bundle_base)
    if base.suffix in (".tflite", ".json"):
        base = base.with_suffix("")
    return base.parent / f"{base.name}_cv"
