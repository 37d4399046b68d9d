"""The model bundle: `<name>.tflite` (full-integer int8) plus `<name>.json` (everything else).

The JSON says what the model expects (labels, front-end parameters, window length, how short
clips are placed in a window, input normalisation) and what it was measured to do. The daemon
refuses a bundle it cannot honour with one clear line instead of producing wrong scores.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from monitor.errors import BundleError
from monitor.frontend import FrontendParams, variant_mismatch

BUNDLE_FORMAT = "soundmon-bundle"
BUNDLE_VERSION = 1

__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "ModelBundle", "bundle_paths", "load_bundle"]


@dataclass
class ModelBundle:
    """A loaded bundle's metadata; `tflite_path` points at the int8 model file.

    One object carries everything the runtime must honour to score as training measured, so
    nothing is guessed from the model file. Made by `load_bundle` (which checks it) or by
    training, which writes it with `to_json_dict`. Fields: `name`; `labels`, the model's output
    order; `frontend`, the log-mel parameters it was trained on; `window_seconds` and
    `window_frames`, one window's length (frames at `frontend.hop_length`); `norm_mean`,
    `norm_std`, the input normalisation (std > 0); `placement`, how clips were placed in a window
    (its "clip_score", "mean" or "max", is read by `monitor.classify`); `thresholds`, default
    per-label thresholds in [0, 1] used where the config sets none; `output_activation`,
    "softmax" or "sigmoid", as recorded; `meta`, the JSON's other keys (training data and
    metrics); the rest as commented below.
    """

    name: str
    tflite_path: Path
    labels: list[str]
    frontend: FrontendParams
    window_seconds: float
    window_frames: int
    norm_mean: float
    norm_std: float
    placement: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    output_activation: str = "softmax"
    meta: dict[str, Any] = field(default_factory=dict)
    stream_tflite_path: Path | None = None  # optional streaming model (monitor.stream_runner)
    stream_hop_frames: int | None = None  # the hop it steps by, in frames
    stream_meta: dict[str, Any] = field(default_factory=dict)  # the rest of its section (macs_per_hop)
    start_model: str | None = None  # optional start model: another bundle, path relative to this JSON
    start_model_path: Path | None = None  # that bundle's path (no suffix), resolved
    # label -> name for people (Home Assistant entity names), e.g. "smoke_detector_smoke_alarm" ->
    # "Smoke detector, smoke alarm"; None for a bundle without them (its labels are the names)
    display_names: dict[str, str] | None = None
    # The labels watched when the config does not list them (`detection.watch`): a bundle with
    # hundreds of labels (AudioSet's 521) names a sensible few; None = every label is watched
    watch: list[str] | None = None
    # Detection settings this model is calibrated for ("detection": {"hop_seconds": 0.975,
    # "smoothing_windows": 1}), used where the config leaves them unset (`DetectionConfig.
    # apply_bundle_defaults`); {} = the config's own defaults
    detection_defaults: dict[str, float | int] = field(default_factory=dict)
    # Per-label smoothing N this model is calibrated for ("detection": {"class_smoothing_windows":
    # {"air_conditioner": 7, ...}}), used where the config sets no N (`DetectionConfig.class_smoothing`)
    class_smoothing_windows: dict[str, int] = field(default_factory=dict)
    # Labels whose start-model openings need no backing by the main model ("detection":
    # {"fast_start_alone": ["gun_shot"]}), used where the config does not say
    # (`DetectionConfig.fast_start_alone`): sounds that short, measured right when opened that way
    fast_start_alone: list[str] = field(default_factory=list)

    def display_name(self, label: str) -> str:
        """The name people see for `label`: its display name, else the label itself."""
        return (self.display_names or {}).get(label, label)

    def to_json_dict(self) -> dict[str, Any]:
        """The bundle JSON (training writes it with this; `meta` carries training data and metrics)."""
        out = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION,
            "name": self.name,
            "labels": list(self.labels),
            "frontend": self.frontend.to_dict(),
            "window_seconds": self.window_seconds,
            "window_frames": self.window_frames,
            "placement": self.placement,
            "normalisation": {"mean": self.norm_mean, "std": self.norm_std},
            "output_activation": self.output_activation,
            "thresholds": self.thresholds,
        }
        if self.watch is not None:
            out["watch"] = list(self.watch)
        if self.detection_defaults or self.class_smoothing_windows or self.fast_start_alone:
            out["detection"] = dict(self.detection_defaults)
            if self.class_smoothing_windows:
                out["detection"][CLASS_SMOOTHING_KEY] = dict(self.class_smoothing_windows)
            if self.fast_start_alone:
                out["detection"][FAST_START_ALONE_KEY] = list(self.fast_start_alone)
        if self.stream_tflite_path is not None:
            out["stream"] = {"tflite": self.stream_tflite_path.name, "hop_frames": self.stream_hop_frames,
                             **self.stream_meta}  # fmt: skip
        if self.start_model is not None:
            out["start_model"] = self.start_model
        if self.display_names is not None:
            out["display_names"] = dict(self.display_names)
        out.update({k: v for k, v in self.meta.items() if k not in out})
        return out


def macs_per_window(meta: dict[str, Any]) -> int | None:
    """A bundle's multiply-accumulates per window from its JSON metadata (`macs_per_window`, or
    under `model` in older bundles); None when it does not say."""
    return meta.get("macs_per_window") or (meta.get("model") or {}).get("macs_per_window")


def bundle_paths(path: str | Path) -> tuple[Path, Path]:
    """(tflite, json) paths for `models/x`, `models/x.tflite` or `models/x.json`."""
    p = Path(path)
    if p.suffix in (".tflite", ".json"):
        p = p.with_suffix("")
    return p.with_suffix(".tflite"), p.with_suffix(".json")


def _require(data: dict, key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if key not in data:
        raise BundleError(f"model bundle {where}: missing key '{key}'")
    value = data[key]
    if not isinstance(value, kind):
        raise BundleError(f"model bundle {where}: '{key}' has the wrong type ({type(value).__name__})")
    return value


def load_bundle(path: str | Path, expected_frontend: FrontendParams | None = None) -> ModelBundle:
    """Read and check a bundle; BundleError (one line) on anything this soundmon cannot run.

    Parameters: `path`, the bundle as `x`, `x.tflite` or `x.json` (`bundle_paths`);
    `expected_frontend`, the front-end the caller runs (a mismatch is refused), or None to accept
    any variant in `monitor.frontend.KNOWN_FRONTENDS`. Returns the `ModelBundle`.
    """
    tflite_path, json_path = bundle_paths(path)
    if not json_path.is_file():
        raise BundleError(f"model bundle: {json_path} not found (a bundle is <name>.tflite + <name>.json)")
    if not tflite_path.is_file():
        raise BundleError(f"model bundle: {tflite_path} not found (a bundle is <name>.tflite + <name>.json)")
    try:
        data = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"model bundle {json_path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"model bundle {json_path}: not a soundmon bundle (format != '{BUNDLE_FORMAT}')")
    version = data.get("format_version")
    if version != BUNDLE_VERSION:
        raise BundleError(
            f"model bundle {json_path}: format_version {version!r}; this soundmon reads version {BUNDLE_VERSION}"
        )
    labels = _require(data, "labels", list, json_path)
    if not labels or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
        raise BundleError(f"model bundle {json_path}: 'labels' must be a non-empty list of distinct names")
    try:
        frontend = FrontendParams.from_dict(_require(data, "frontend", dict, json_path))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"model bundle {json_path}: front-end: {exc}") from None
    if expected_frontend is not None:
        if frontend != expected_frontend:
            mine, theirs = asdict(frontend), asdict(expected_frontend)
            diffs = [f"{k}={v!r} (daemon: {theirs[k]!r})" for k, v in mine.items() if theirs[k] != v]
            raise BundleError(f"model bundle {json_path}: front-end mismatch: {', '.join(diffs)}")
    else:
        # The daemon runs the front-end variants it knows (monitor.frontend.KNOWN_FRONTENDS:
        # its default and YAMNet's); anything else is named against the nearest of them.
        problem = variant_mismatch(frontend)
        if problem is not None:
            raise BundleError(f"model bundle {json_path}: front-end mismatch: {problem}")
    window_seconds = float(_require(data, "window_seconds", (int, float), json_path))
    window_frames = int(_require(data, "window_frames", int, json_path))
    if window_frames != frontend.frames_for(window_seconds):
        raise BundleError(
            f"model bundle {json_path}: window_frames {window_frames} does not match "
            f"{window_seconds} s at hop {frontend.hop_length} (= {frontend.frames_for(window_seconds)})"
        )
    norm = _require(data, "normalisation", dict, json_path)
    try:
        mean, std = float(norm["mean"]), float(norm["std"])
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"model bundle {json_path}: 'normalisation' needs numeric 'mean' and 'std'") from None
    if not std > 0:
        raise BundleError(f"model bundle {json_path}: normalisation std must be > 0")
    activation = data.get("output_activation", "softmax")
    if activation not in ("softmax", "sigmoid"):
        raise BundleError(f"model bundle {json_path}: output_activation must be 'softmax' or 'sigmoid'")
    thresholds = data.get("thresholds") or {}
    bad = [k for k, v in thresholds.items() if k not in labels or not isinstance(v, (int, float)) or not 0 <= v <= 1]
    if bad:
        raise BundleError(f"model bundle {json_path}: bad default thresholds for {bad}")
    known = {
        "format", "format_version", "name", "labels", "frontend", "window_seconds", "window_frames",
        "placement", "normalisation", "output_activation", "thresholds", "stream", "start_model",
        "display_names", "watch", "detection",
    }  # fmt: skip
    start_model = data.get("start_model")
    if start_model is not None and (not isinstance(start_model, str) or not start_model):
        raise BundleError(f"model bundle {json_path}: 'start_model' must be a bundle path (relative to the JSON)")
    stream_path, stream_hop = _stream_section(data, json_path, window_frames)
    display_names = _display_names(data, json_path, labels)
    watch = _watch(data, json_path, labels)
    detection_defaults = _detection_defaults(data, json_path)
    class_smoothing = _class_smoothing(data, json_path, labels)
    fast_start_alone = _fast_start_alone(data, json_path, labels)
    return ModelBundle(
        name=str(data.get("name") or json_path.stem),
        tflite_path=tflite_path,
        labels=list(labels),
        frontend=frontend,
        window_seconds=window_seconds,
        window_frames=window_frames,
        norm_mean=mean,
        norm_std=std,
        placement=dict(data.get("placement") or {}),
        thresholds={k: float(v) for k, v in thresholds.items()},
        output_activation=activation,
        meta={k: v for k, v in data.items() if k not in known},
        stream_tflite_path=stream_path,
        stream_hop_frames=stream_hop,
        stream_meta={k: v for k, v in (data.get("stream") or {}).items() if k not in ("tflite", "hop_frames")},
        start_model=start_model,
        start_model_path=None if start_model is None else json_path.parent / start_model,
        display_names=display_names,
        watch=watch,
        detection_defaults=detection_defaults,
        class_smoothing_windows=class_smoothing,
        fast_start_alone=fast_start_alone,
    )


# The detection keys a bundle may set defaults for, with the range each must lie in (the same as
# `monitor.config.DetectionConfig`'s): the ones a model's calibration depends on.
BUNDLE_DETECTION_KEYS: dict[str, tuple[type, float, float]] = {
    "hop_seconds": (float, 0.01, 10.0),
    "smoothing_windows": (int, 1, 100),
    "start_model_weight": (float, 0.0, 0.9),
    "fast_start_threshold": (float, 0.01, 1.0),
}


def _detection_defaults(data: dict, json_path: Path) -> dict[str, float | int]:
    """The optional "detection" section: {"hop_seconds": s, "smoothing_windows": n,
    "start_model_weight": w, "fast_start_threshold": t}, the settings the model's thresholds (and
    its start model's) were calibrated with, applied where the config does not set them."""
    section = data.get("detection")
    if section is None:
        return {}
    if not isinstance(section, dict) or not section:
        raise BundleError(f"model bundle {json_path}: 'detection' must be a non-empty object")
    out: dict[str, float | int] = {}
    for key, value in section.items():
        if key in (CLASS_SMOOTHING_KEY, FAST_START_ALONE_KEY):
            continue  # per label: `_class_smoothing`, `_fast_start_alone`
        if key not in BUNDLE_DETECTION_KEYS:
            raise BundleError(f"model bundle {json_path}: 'detection' may set only "
                              f"{sorted([*BUNDLE_DETECTION_KEYS, CLASS_SMOOTHING_KEY, FAST_START_ALONE_KEY])}, not '{key}'")
        kind, low, high = BUNDLE_DETECTION_KEYS[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
        if not ok or (kind is int and value != int(value)):
            raise BundleError(f"model bundle {json_path}: 'detection.{key}' must be a {kind.__name__} in [{low:g}, {high:g}]")
        out[key] = kind(value)
    return out


CLASS_SMOOTHING_KEY = "class_smoothing_windows"
"""The "detection" key for per-label smoothing: {label: N}, N in [1, 100]."""


def _class_smoothing(data: dict, json_path: Path, labels: list[str]) -> dict[str, int]:
    """The optional "detection": {"class_smoothing_windows": {label: N}}: labels of the bundle,
    each N an integer in `smoothing_windows`'s range. Called after `_detection_defaults`, which
    has refused a "detection" that is not an object."""
    section = (data.get("detection") or {}).get(CLASS_SMOOTHING_KEY)
    if section is None:
        return {}
    where = f"model bundle {json_path}: 'detection.{CLASS_SMOOTHING_KEY}'"
    if not isinstance(section, dict) or not section:
        raise BundleError(f"{where} must be a non-empty object of label: windows")
    unknown = sorted(set(section) - set(labels))
    if unknown:
        raise BundleError(f"{where} names labels the model does not have: {unknown}")
    _, low, high = BUNDLE_DETECTION_KEYS["smoothing_windows"]
    bad = sorted(k for k, v in section.items()
                 if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high)  # fmt: skip
    if bad:
        raise BundleError(f"{where} must give each label an integer in [{low}, {high}]; bad: {bad}")
    return {k: int(v) for k, v in section.items()}


FAST_START_ALONE_KEY = "fast_start_alone"
"""The "detection" key for the labels whose start-model openings need no backing: [label, ...]."""


def _fast_start_alone(data: dict, json_path: Path, labels: list[str]) -> list[str]:
    """The optional "detection": {"fast_start_alone": [label, ...]}: distinct labels of the bundle.
    Called after `_detection_defaults`, which has refused a "detection" that is not an object."""
    section = (data.get("detection") or {}).get(FAST_START_ALONE_KEY)
    if section is None:
        return []
    where = f"model bundle {json_path}: 'detection.{FAST_START_ALONE_KEY}'"
    if not isinstance(section, list) or not all(isinstance(x, str) for x in section) or len(set(section)) != len(section):
        raise BundleError(f"{where} must be a list of distinct labels")
    unknown = sorted(set(section) - set(labels))
    if unknown:
        raise BundleError(f"{where} names labels the model does not have: {unknown}")
    return list(section)


def _watch(data: dict, json_path: Path, labels: list[str]) -> list[str] | None:
    """The optional "watch": [label, ...] section: the labels watched when the config does not
    say (`detection.watch`). Non-empty, distinct labels of the bundle; None = every label."""
    watch = data.get("watch")
    if watch is None:
        return None
    if not isinstance(watch, list) or not watch or not all(isinstance(x, str) and x for x in watch):
        raise BundleError(f"model bundle {json_path}: 'watch' must be a non-empty list of labels")
    known = set(labels)
    unknown = [x for x in watch if x not in known]
    if unknown:
        raise BundleError(f"model bundle {json_path}: 'watch' names labels it does not have: {unknown[:5]}")
    if len(set(watch)) != len(watch):
        raise BundleError(f"model bundle {json_path}: 'watch' names a label twice")
    return list(watch)


def _display_names(data: dict, json_path: Path, labels: list[str]) -> dict[str, str] | None:
    """The optional "display_names": {label: name} section (names for people, e.g. Home Assistant
    entity names). Every key must be a label; a label without a name shows as itself."""
    names = data.get("display_names")
    if names is None:
        return None
    if not isinstance(names, dict) or not all(isinstance(v, str) and v.strip() for v in names.values()):
        raise BundleError(f"model bundle {json_path}: 'display_names' must map labels to non-empty names")
    unknown = sorted(set(names) - set(labels))
    if unknown:
        raise BundleError(f"model bundle {json_path}: display_names for labels it does not have: {unknown[:5]}")
    return {label: names[label] for label in labels if label in names}


def _stream_section(data: dict, json_path: Path, window_frames: int) -> tuple[Path | None, int | None]:
    """The optional "stream": {"tflite": file beside the JSON, "hop_frames": n} section."""
    section = data.get("stream")
    if section is None:
        return None, None
    try:
        name, hop = str(section["tflite"]), section["hop_frames"]
    except (KeyError, TypeError):
        raise BundleError(f"model bundle {json_path}: 'stream' needs 'tflite' and 'hop_frames'") from None
    if not isinstance(hop, int) or not 0 < hop <= window_frames:
        raise BundleError(f"model bundle {json_path}: stream hop_frames must be 1..{window_frames}")
    path = json_path.parent / name
    if not path.is_file():
        raise BundleError(f"model bundle {json_path}: streaming model {path} not found")
    return path, hop
