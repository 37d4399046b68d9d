"""Typed configuration (config.yaml), validated at start with pydantic.

Every key has a default, so an empty file is a valid configuration. Unknown keys, wrong types,
out-of-range values and duplicate YAML keys are `ConfigError`s (exit status 2) whose message is
one line naming the key path and what is allowed there. Checks that need the model run later:
`Config.check_against_labels` (the labels named by `detection.watch` and `detection.classes`,
with a suggestion for a typo) and `check_model_path` (the bundle files exist).

Environment: `SOUNDMON_STATE_DIR` replaces the `storage.state_dir` default ("./state") when the
file does not set the key (the systemd unit points it at /var/lib/soundmon); `SOUNDMON_MODEL`
replaces the shipped model when `model.path` is null.

The user documentation of every key is here: each `Field`'s `description` (what it does, units,
what null means: `_null_meaning` quotes that clause in error messages) and each section's
docstring (first line: its heading). `make docs` (`python -m tools.config_docs --write`) writes
config.yaml's comments and docs/configuration.md from them; tests/test_config_docs.py fails when
those files are stale.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import socket
import tempfile
import types
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from monitor import discovery, topics
from monitor.bundle import bundle_paths
from monitor.errors import ConfigError

__all__ = [
    "AudioConfig",
    "ClassConfig",
    "Config",
    "DetectionConfig",
    "LoggingConfig",
    "ModelConfig",
    "MqttConfig",
    "StorageConfig",
    "check_model_path",
    "check_state_dir",
    "config_source",
    "default_model_path",
    "default_state_dir",
    "shipped_models_dir",
    "load_config",
    "parse_config",
]

log = logging.getLogger("soundmon.config")

MODELS_PACKAGE = "soundmon_models"  # the repository's models/, installed as package data
DEFAULT_MODEL_NAME = "urban10"
DEFAULT_STATE_DIR = Path("./state")
STATE_DIR_ENV = "SOUNDMON_STATE_DIR"

# $NAME or ${NAME} in mqtt.password_file (systemd credentials: ${CREDENTIALS_DIRECTORY}/...).
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")

# Error types whose message is written in full by our validators (no "expected ..." rewrite).
_OWN_ERROR = "soundmon"


def shipped_models_dir() -> Path:
    """Where the shipped bundles are: the `soundmon_models` package data (models/ in a checkout).

    Wheels install unzipped, so the resource is a real directory the TFLite runtime can read.
    """
    return Path(str(resources.files(MODELS_PACKAGE)))


def default_model_path() -> Path:
    """The shipped bundle: $SOUNDMON_MODEL, else `urban10` from the installed package data."""
    env = os.environ.get("SOUNDMON_MODEL")
    return Path(env) if env else shipped_models_dir() / DEFAULT_MODEL_NAME


def default_state_dir() -> Path:
    """`storage.state_dir` when the file does not set it: $SOUNDMON_STATE_DIR, else ./state."""
    env = os.environ.get(STATE_DIR_ENV)
    return Path(env) if env else DEFAULT_STATE_DIR


def _is_numeric(annotation: Any) -> bool:
    """True for int/float fields (optionally | None), which must not accept YAML booleans."""
    args = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return bool({int, float} & set(args)) and bool not in args


class _Section(BaseModel):
    # allow_inf_nan=False: YAML's .inf / .nan are never a sensible number of seconds or dB.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads `port: yes` (YAML true) as 1; for a number that is a mistake.
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(v, bool) and field is not None and _is_numeric(field.annotation):
            raise PydanticCustomError("bool_for_number", "a boolean where a number belongs")
        return v


class AudioConfig(_Section):
    """Where the sound comes from.

    A microphone that fails (a stream error, no callbacks for `stall_seconds`, or only digital
    zeros for `silence_seconds`) shows in `<base>/stats` as `"audio": "stalled"`, `"silent"` or
    `"error"`; soundmon reopens the device with a back-off (up to `reopen_backoff_max`) and
    carries on without a restart, logging one line per change of state. A reload (SIGHUP) that
    changes a key here reopens the device.
    """

    device: int | str | None = Field(
        default=None,
        description="Input device: null = the system default input; an integer = a PortAudio "
        "device index; a string = part of the device name. `soundmon devices` lists the devices "
        "and their rates.",
    )
    sample_rate: int | None = Field(
        default=None,
        gt=0,
        description="Capture rate, Hz. null = the device's default rate. Audio at any rate is "
        "resampled (soxr) to the model's rate (16 kHz for every shipped model), so set it only "
        "when the device's default is odd.",
    )
    channels: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Channels to open on the device; they are averaged to the one mono signal "
        "detection works on.",
    )
    # 0.05 s: a start found between windows waits for the block that completes it (up to 0.06 s
    # with 0.1 s blocks). The daemon's worker wakes only for its results, whatever the block;
    # PortAudio's callback thread wakes for every block (`python -m tools.realtime_cpu`, 2026-12-06).
    block_seconds: float = Field(
        default=0.05,
        gt=0.0,
        le=1.0,
        description="Seconds of audio per PortAudio callback block. Smaller = lower latency and "
        "more wake-ups: a fast start found half a hop after a window waits for the block that "
        "completes it (up to 0.06 s with 0.1 s blocks), and each block wakes PortAudio's "
        "callback thread (at 0.05 s about 5 ms of CPU per second of audio, a third of the "
        "daemon's, measured live on a 2-core Xeon).",
    )
    ring_seconds: float = Field(
        default=10.0,
        ge=1.0,
        le=300.0,
        description="Seconds of audio the capture ring holds. If processing falls further "
        "behind than this, the oldest audio is overwritten and counted as dropped (the audio "
        "callback never blocks).",
    )
    stall_seconds: float = Field(
        default=3.0,
        gt=0.0,
        description="Seconds without any audio callback before the device counts as stalled "
        '(`"audio": "stalled"` in `<base>/stats`) and is reopened.',
    )
    silence_seconds: float = Field(
        default=10.0,
        gt=0.0,
        description="Seconds of nothing but digital zeros (a muted or unplugged microphone) "
        'before the input is reported as silent (`"audio": "silent"` in `<base>/stats`); the '
        "audio is still analysed.",
    )
    reopen_backoff_max: float = Field(
        default=30.0,
        gt=0.0,
        description="Longest wait, in seconds, between attempts to reopen a lost device (the "
        "wait doubles from 1 s up to this).",
    )


class ModelConfig(_Section):
    """The classifier.

    A model bundle is `<name>.tflite` (the int8 model) plus `<name>.json` (its labels, audio
    front-end, window length and tuned thresholds); `soundmon train` writes them. Shipped:
    `models/urban10` (10 street sounds, 4 s windows, the default), `models/urban10_yamnet` (the
    same sounds on YAMNet's embedding) and `models/audioset` (AudioSet's 521 sounds). A reload
    (SIGHUP) that changes a key here loads the model again.
    """

    path: Path | None = Field(
        default=None,
        description="Model bundle: the path of `<name>.tflite` + `<name>.json`, with or without "
        "the suffix; a relative path is relative to the working directory. null = the shipped "
        "model (`models/urban10`), or `$SOUNDMON_MODEL` when that is set.",
    )
    threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Interpreter threads. 1 leaves the Pi's other cores free; inference takes a "
        "few milliseconds.",
    )

    def resolved_path(self) -> Path:
        """The bundle to load: `path`, else the default (`$SOUNDMON_MODEL` or the shipped one)."""
        return self.path if self.path is not None else default_model_path()


class ClassConfig(_Section):
    """The settings of one label, under `detection.classes.<label>`.

    Threshold precedence: `detection.classes.<label>.threshold` > the bundle's tuned default for
    the label > `detection.default_threshold`. A label written with nothing after its colon
    (`siren:`) is the same as not listing it. Both keys can also be set over MQTT
    (`mqtt.control`): a value set that way wins over the file until an empty payload returns
    the label to it.
    """

    enabled: bool = Field(
        default=True,
        description="false = the label never fires; disabling it on reload ends its open event.",
    )
    threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Start threshold for this label. null = the bundle's default; that is its "
        "tuned value for the label (usually best), else `detection.default_threshold`. 0 = "
        "always on; 1.0 = only a perfect score (in practice never with an int8 model).",
    )
    smoothing_windows: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Windows averaged for this label (see `detection.smoothing_windows`). null = "
        "the bundle's own value for the label when its JSON names one and the file does not set "
        "`detection.smoothing_windows` (`models/urban10` names 7 for its six steady sounds, so "
        "that about 3.5 s of such a sound, not one loud second, raises an alert), else "
        "`detection.smoothing_windows`.",
    )
    fast_start_alone: bool | None = Field(
        default=None,
        description="true = with fast start on, the start model may open this label's event "
        "without the main model's backing (`detection.fast_start_threshold`), so a sound shorter "
        "than the 4 s model can confirm is still reported, and its event may be shorter than a "
        "hop. Meant for sounds that short whose start-model openings are measured right. null = "
        "the bundle's list (`models/urban10` lists none: its gun shots opened alone were 31 of 35 "
        "right on held-out clips against the 95 % asked; its model card has the measurement); "
        "false = always ask for backing.",
    )


class DetectionConfig(_Section):
    """From scores to events.

    Every `hop_seconds` the model scores the newest window of audio (the window's length is the
    model's own: 4 s for `models/urban10`, 0.975 s for `models/audioset` and
    `models/urban10_yamnet`). Per label, the scores of the last `smoothing_windows` windows are
    averaged; an event starts when the smoothed score reaches the label's threshold, stays on
    while it or the latest window's own score is at least threshold x `release_ratio`, and ends
    once both have stayed below that for `hold_seconds` (the end is reported at the last window
    above it). After an end, the
    label waits `cooldown_seconds` before it can start again. Labels are independent:
    overlapping sounds give overlapping events. A reload (SIGHUP) applies these keys from the
    next window on, without a gap in the audio.
    """

    window_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Deprecated, has no effect: every window is the model's own length, fixed "
        "by its bundle (the bundle JSON's `window_seconds`). Still accepted so that older files "
        "load; a value other than null logs a warning. Leave it out.",
    )
    hop_seconds: float = Field(
        default=0.5,
        ge=0.01,
        le=10.0,
        description="Seconds between the starts of consecutive (overlapping) windows: one "
        "inference per hop. Smaller = faster reaction and more CPU. At 0.5 s a bundle with a "
        "streaming model (`models/urban10` has one; `soundmon train`'s default body makes one) "
        "computes only what each hop adds; any other hop runs the whole window every hop (for "
        "`models/urban10` about 8x its work per second of audio at 0.5 s, 15x at 0.25 s). Unset, "
        "a bundle's own default applies when its JSON names one (`models/audioset`: 0.975 s, one "
        "whole window per hop, so that it runs within the CPU budget; its thresholds are "
        "calibrated for that hop), else 0.5.",
    )
    smoothing_windows: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Number of windows whose scores are averaged before the threshold test (1 "
        "= no smoothing). Suppresses one-window spikes; delays a start by up to N-1 hops. Unset, "
        "a bundle's own default applies when its JSON names one (`models/audioset`: 1, with its "
        "0.975 s hop), else 3.",
    )
    default_threshold: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Start threshold for a label that has none under `detection.classes` and "
        "none in the model bundle.",
    )
    release_ratio: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="Hysteresis: an open event stays on while its smoothed score, or the latest "
        "window's own score, is at least threshold x release_ratio (the release level). 1.0 = no "
        "hysteresis.",
    )
    hold_seconds: float = Field(
        default=1.0,
        ge=0.0,
        le=600.0,
        description="Seconds a dip below the release level must last (counted from the last "
        "window above it) before the event ends, so a wavering siren is one event, not many. "
        "The end is reported at the last window above the release level (the hold is not "
        "counted in the duration).",
    )
    cooldown_seconds: float = Field(
        default=2.0,
        ge=0.0,
        le=3600.0,
        description="Seconds after an event of a label ends before that label can start again.",
    )
    min_level_dbfs: float = Field(
        default=-70.0,
        ge=-200.0,
        le=0.0,
        description="Level gate, dBFS: windows quieter than this skip inference and count as "
        "all-zero scores (saves CPU in silence; lets events end). -200 = never skip.",
    )
    fast_start_threshold: float | None = Field(
        default=0.9,
        gt=0.0,
        le=1.0,
        description="Fast start: also start an event as soon as the bundle's start model (a "
        "second classifier that hears only the newest second; the bundle JSON names it in "
        "`start_model`) gives a label this top score, that score reaches the label's own "
        "threshold and the main model backs it (its own latest window or smoothed score for the "
        "label at the release level, or its latest rising into it, unless the start model's "
        "score is 0.95 or more), so an "
        "alert comes sooner after a sound begins. The event then ends by the "
        "usual rules on the window scores (the main model's, with the start model's share: "
        "`start_model_weight`). How sure a start model must be depends on how "
        "its scores are calibrated, so unset, a bundle's own value applies when its JSON names "
        "one (`models/urban10`: 0.75; on held-out clips 4 % more onsets answered than the "
        "previous default pair at 0.9, and as many events right), else 0.9. Higher: fewer wrong "
        "events, later; null = off: the latest events. Fast start "
        "applies to a bundle with a start model (`models/urban10` has one) and is quietly off "
        "for one without; a value written in the file for a bundle without a start model is an "
        "error (so the shipped config.yaml leaves it unset). The start model is asked at each "
        "window and half a hop after it (about one more main-model hop of inference). README "
        "\"Faster or fewer alerts\" has the measured trade-off.",
    )
    start_model_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=0.9,
        description="With fast start on, the start model's share of every window's score: the "
        "detector smooths and compares (1 - w) x the main model's score + w x the start model's "
        "on the window's newest second, so a sound that has just begun or stopped counts sooner "
        "and a steady high score needs both models. 0 = the main model's scores alone (always so "
        "while fast start is off). Unset, a bundle's own value applies when its JSON names one "
        "(`models/urban10`: 0.5, chosen on held-out clips with its fast start 0.75: fewer "
        "wrong events than at 0, 0.2 or 0.3, most of all where a sound follows a pause), else "
        "0. Costs nothing: the start model scores every window for fast start anyway.",
    )
    warm_start: bool = Field(
        default=True,
        description="The first window comes one hop into a stream (and after the device comes "
        "back), with silence ahead of the audio so far, so a sound already playing at start is "
        "reported within a hop, not after a full window. From the first full window on the "
        "windows are the same either way. `soundmon classify` never warm-starts (its clip score "
        "is the training evaluation's rule).",
    )
    level_interval: float = Field(
        default=5.0,
        ge=0.0,
        description="Seconds between `<base>/level` messages (the input level in dBFS); 0 = off.",
    )
    scores_interval: float = Field(
        default=1.0,
        ge=0.0,
        description="Seconds of audio between `<base>/scores` messages; 0 = off. Each is JSON "
        "with the newest window's time, stream offset, level and its 5 top watched labels: "
        '`{"time", "stream_offset_s", "dbfs", "top": [{"label", "name", "score", "raw"}, ...]}`, '
        "`score` being the smoothed score the threshold is compared with, `raw` the window's "
        "own (with `start_model_weight`, both models' as the detector counts it). For tuning "
        "thresholds by watching what the model hears (Home Assistant's \"Top sound\" sensor).",
    )
    watch: list[str] | Literal["all"] | None = Field(
        default=None,
        examples=[["smoke_detector_smoke_alarm", "fire_alarm", "shatter", "dog", "doorbell", "knock"]],
        description="The watched labels: only these have events, retained "
        "`<base>/state/<label>` topics, Home Assistant entities (3 each with `mqtt.control`), "
        "`<base>/config/<label>/...` echoes, `<base>/set/<label>/...` commands and places in "
        "`<base>/scores`; the model still scores every label. A list of the model's labels, "
        "`all`, or null. null = the model's default list, or every label of a model without one; "
        "the default list is the bundle JSON's `watch`: the 10 street sounds of `models/urban10` (not its `background` output), 11 "
        "sounds that matter in a home for `models/audioset` (its model card lists them and says "
        "why). `all` = every label (`models/audioset`: 521, about 1,570 entities). Names are "
        "checked against the model, with a suggestion for a typo; an empty list is an error; a "
        "label configured under `classes` must be watched. On reload, labels that stop being "
        "watched end their open events and lose their state, echoes and entities; at a restart "
        "too, for labels dropped while the daemon was stopped (`<state_dir>/announced.json` "
        "keeps what was published). To find a label, run `soundmon classify --model "
        "models/audioset some.wav` on a recording of the sound; the example is for "
        "`models/audioset`.",
    )
    classes: dict[str, ClassConfig] = Field(
        default_factory=dict,
        description="Per-label settings (`detection.classes.<label>`, below), keyed by the "
        "model's labels: another name is an error, and so is a label that is not watched. "
        "Nothing is overridden by default.",
    )

    @field_validator("watch", mode="before")
    @classmethod
    def _watch_list(cls, v: Any) -> Any:
        # `watch: dog` (one label, not a list) and `watch: []` are easy slips with a clear fix.
        if isinstance(v, str) and v != "all":
            raise PydanticCustomError(
                _OWN_ERROR,
                "{got} is not allowed; allowed: a list of labels (one label is a list too: "
                "[{label}]), 'all', or null for the model's default list",
                {"got": _show(v), "label": v},
            )
        if isinstance(v, list) and not v:
            raise PydanticCustomError(
                _OWN_ERROR,
                "an empty list watches nothing; allowed: a list of labels, 'all', or null for "
                "the model's default list",
            )
        return v

    @field_validator("watch")
    @classmethod
    def _watch_once(cls, v: list[str] | str | None) -> list[str] | str | None:
        # A label listed twice is harmless (it is watched once); keep the first.
        return list(dict.fromkeys(v)) if isinstance(v, list) else v

    @field_validator("classes", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        # "classes:" with nothing under it is no overrides; so is "siren:" with no keys under it.
        if v is None:
            return {}
        if isinstance(v, dict):
            return {k: ({} if c is None else c) for k, c in v.items()}
        return v

    def _per_label(self, key: str, bundle_defaults: dict, fallback, labels: list[str]) -> dict:
        """Per label: classes.<label>.<key> when set, else `bundle_defaults[label]`, else `fallback`."""
        out = {}
        for label in labels:
            own = getattr(self.classes.get(label), key, None)
            out[label] = own if own is not None else bundle_defaults.get(label, fallback)
        return out

    def thresholds(self, bundle_defaults: dict[str, float], labels: list[str]) -> dict[str, float]:
        """Effective per-label threshold: classes.<label>.threshold > bundle default > default_threshold."""
        return self._per_label("threshold", bundle_defaults, self.default_threshold, labels)

    def class_smoothing(self, bundle_defaults: dict[str, int], labels: list[str]) -> dict[str, int]:
        """Effective per-label smoothing N: classes.<label>.smoothing_windows > the bundle's
        per-label value (only while the file leaves `smoothing_windows` unset: a number written
        there is meant for every label) > smoothing_windows."""
        own = {} if "smoothing_windows" in self.model_fields_set else bundle_defaults
        return self._per_label("smoothing_windows", own, self.smoothing_windows, labels)

    def fast_start_alone(self, bundle_labels: list[str], labels: list[str]) -> set[str]:
        """Labels whose start-model openings need no backing: classes.<label>.fast_start_alone
        when set, else whether the bundle lists the label."""
        listed = {x: True for x in bundle_labels}
        return {x for x, v in self._per_label("fast_start_alone", listed, False, labels).items() if v}

    def apply_bundle_defaults(self, defaults: dict[str, float | int]) -> None:
        """Take a bundle's own detection defaults (its JSON's "detection": the hop and smoothing
        its thresholds were calibrated with) for every key the config file did not set. Called
        where the config meets the bundle (the CLI at start, the daemon at a reload), on a config
        just loaded."""
        for key, value in defaults.items():
            if key not in self.model_fields_set:
                setattr(self, key, value)
                self.model_fields_set.discard(key)  # still the config's "unset": a later bundle may differ

    def overridden_calibration(self, defaults: dict[str, float | int], class_smoothing: dict[str, int]) -> list[str]:
        """The bundle's calibrated detection settings (its JSON's "detection") that keys written in
        the file override, one text each (`detection.hop_seconds 0.5 (the bundle's: 0.975)`), so the
        daemon can say so once at start: a `config.yaml` copied before 2026-12-05 wrote out the
        hop and the smoothing and silently overrode both."""
        out = [
            f"detection.{key} {_fmt(getattr(self, key))} (the bundle's: {_fmt(value)})"
            for key, value in defaults.items()
            if key in self.model_fields_set and getattr(self, key) != value
        ]
        if "smoothing_windows" in self.model_fields_set:
            own = {x: n for x, n in class_smoothing.items()
                   if (self.classes.get(x) is None or self.classes[x].smoothing_windows is None)
                   and n != self.smoothing_windows}  # fmt: skip
            if own:
                listed = ", ".join(f"{x} {n}" for x, n in sorted(own.items()))
                out.append(f"detection.smoothing_windows {self.smoothing_windows} for every label (the bundle's: {listed})")
        return out

    def enabled_labels(self, labels: list[str]) -> set[str]:
        """Labels that may fire: all of them unless classes.<label>.enabled is false."""
        return {x for x in labels if self.classes.get(x, ClassConfig()).enabled}

    def watched_labels(self, labels: list[str], default: list[str] | None = None) -> list[str]:
        """The watched labels, in the model's order: `watch` (checked against the model by
        `Config.check_against_labels`), else the model's default list `default` (a bundle's
        "watch"), else every label. Only these have events, states, HA entities and echoes."""
        chosen = default if self.watch is None else None if self.watch == "all" else self.watch
        if chosen is None:
            return list(labels)
        keep = set(chosen)
        return [x for x in labels if x in keep]


def _prefix_problem(prefix: str) -> str | None:
    """Why `prefix` cannot start soundmon's topics (`base_topic`, `discovery_prefix`), or None:
    the MQTT rule of `monitor.topics`, and no leading or trailing '/' (an empty topic level)."""
    why = topics.topic_problem(prefix)
    if why is None and (prefix.startswith("/") or prefix.endswith("/")):
        why = "begins or ends with '/'"
    return why


class MqttConfig(_Section):
    """Publishing over MQTT.

    Topics are under `<base>` = `base_topic`, default `soundmon/<node_id>`; the README's "MQTT
    contract" lists them and their payloads. A reload (SIGHUP) that changes a key here (other
    than `stats_interval`) restarts the connection.
    """

    enabled: bool = Field(default=True, description="false = run without a broker (nothing is published).")
    host: str = Field(default="localhost", description="Broker host name or address.")
    port: int = Field(
        default=1883, ge=1, le=65535, description="Broker TCP port (1883 plain, usually 8883 with TLS)."
    )
    node_id: str = Field(
        default_factory=lambda: _safe_node_id(socket.gethostname()),
        examples=["kitchen-pi"],
        description="This node's name, one MQTT topic level: no `/`, `#`, `+`, whitespace or "
        "control characters. Default: the host name with other characters replaced by `_`. "
        "Renamed (this, `base_topic` or `discovery_prefix`), the node empties its old name's "
        "retained topics and Home Assistant entities at the next connect (`<state_dir>/announced.json` "
        "remembers them). Home Assistant's ids are the name lower-cased, with runs of characters other "
        "than letters, digits and `_` replaced by `_`: give two nodes names that differ there.",
    )
    base_topic: str | None = Field(
        default=None,
        description="Topic prefix for everything this node publishes: no `#` or `+`, no control "
        "characters, not beginning with `$` (brokers drop messages there), no leading or "
        "trailing `/`. null = `soundmon/<node_id>`.",
    )
    client_id: str | None = Field(
        default=None,
        description="MQTT client id. null = `soundmon-<node_id>-<tag>`; the tag is 8 hex "
        "digits of a hash of the machine id (`/etc/machine-id`), so two Pis both named "
        "`raspberrypi` do not throw each other off the broker. Broker ACLs keyed on the client "
        "id (`%c`) need this id.",
    )
    username: str | None = Field(default=None, description="Broker user name; null = connect anonymously.")
    password_file: Path | None = Field(
        default=None,
        description="File whose content (stripped) is the password; `$NAME` and `${NAME}` in "
        "the path are replaced by environment variables (`${CREDENTIALS_DIRECTORY}/mqtt-password` "
        "reads a systemd credential). At most one of `password_file` and `password_env`; never "
        "write the password itself in the configuration.",
    )
    password_env: str | None = Field(
        default=None,
        description="Name of an environment variable holding the password (at most one of "
        "`password_file` and `password_env`).",
    )
    tls: bool = Field(default=False, description="true = connect with TLS.")
    ca_file: Path | None = Field(
        default=None, description="PEM CA bundle to verify the broker; null = the system's trusted CAs."
    )
    cert_file: Path | None = Field(
        default=None, description="Client certificate (PEM) for brokers that require one; null = none."
    )
    key_file: Path | None = Field(
        default=None,
        description="Key (PEM) of the client certificate; null = none, or the key is in `cert_file`.",
    )
    tls_insecure: bool = Field(
        default=False,
        description="true = do not verify the broker's host name against its certificate "
        "(testing only).",
    )
    keepalive: int = Field(default=30, ge=5, le=3600, description="Seconds between keep-alive pings.")
    reconnect_max_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Longest wait, in seconds, between reconnect attempts (the back-off grows up "
        "to this).",
    )
    discovery: bool = Field(
        default=True,
        description="true = publish Home Assistant discovery configs: per watched label a "
        "binary sensor (and, with `control`, a threshold number and a detection switch); per "
        "node \"Top sound\" and \"Top score\" sensors (with `detection.scores_interval`), a "
        "level sensor and health sensors.",
    )
    discovery_prefix: str = Field(
        default="homeassistant",
        description="Topic prefix Home Assistant listens on for discovery (the same rules as "
        "`base_topic`).",
    )
    stats_interval: float = Field(
        default=60.0, gt=0, description="Seconds between `<base>/stats` health messages."
    )
    control: bool = Field(
        default=True,
        description="Tuning over MQTT (Home Assistant's number and switch entities use it). true "
        "= subscribe to `<base>/set/<label>/threshold` (a number 0..1, or an empty payload: back "
        "to the file's value) and `<base>/set/<label>/enabled` (`ON` or `OFF`, or an empty "
        "payload: back to the file's value), and publish the values in force, retained, on "
        "`<base>/config/<label>/threshold|enabled` at every connect and after every change. "
        "Values set this way win over `detection.classes` (which wins over the bundle's "
        "defaults), are kept in `<state_dir>/overrides.json` across restarts and are re-applied "
        "over the file at SIGHUP. Anyone who may publish to the broker can change them: "
        "restrict `<base>/set/#` with the broker's ACL if that matters. false = the commands are "
        "not subscribed (nor announced to Home Assistant) and `overrides.json` is not applied: "
        "the file alone decides.",
    )
    flush_rate: float = Field(
        default=100.0,
        ge=0,
        description="Detections per second after the first `max_inflight` when a backlog of "
        "spooled detections is sent (after an outage); 0 = no cap. A broker acknowledges what "
        "it then drops from a slow subscriber's queue, so pacing is what keeps a backlog from "
        "being lost there.",
    )
    max_inflight: int = Field(
        default=20, ge=1, le=65535, description="Detections sent and not yet acknowledged at once."
    )

    @field_validator("node_id")
    @classmethod
    def _node_id_chars(cls, v: str) -> str:
        if not v or any(c in v for c in "/#+") or any(c.isspace() for c in v) or topics.level_problem(v):
            raise PydanticCustomError(
                _OWN_ERROR,
                "{got} is not allowed{why}; allowed: a non-empty name without '/', '#', '+', "
                "whitespace or control characters (it is one MQTT topic level)",
                {"got": _show(v), "why": f": it {topics.level_problem(v)}" if topics.level_problem(v) else ""},
            )
        return v

    @field_validator("base_topic")
    @classmethod
    def _base_topic_chars(cls, v: str | None) -> str | None:
        if v is not None and (why := _prefix_problem(v)) is not None:
            raise PydanticCustomError(
                _OWN_ERROR,
                "{got} is not allowed{why}; allowed: a non-empty MQTT topic (no '#', '+', control "
                "characters, leading '$' or leading/trailing '/'), or null for soundmon/<node_id>",
                {"got": _show(v), "why": f": it {why}" if why else ""},
            )
        return v

    @field_validator("discovery_prefix")
    @classmethod
    def _discovery_prefix_chars(cls, v: str) -> str:
        if (why := _prefix_problem(v)) is not None:
            raise PydanticCustomError(
                _OWN_ERROR,
                "{got} is not allowed{why}; allowed: an MQTT topic prefix, usually 'homeassistant' "
                "(no '#', '+', control characters, leading '$' or leading/trailing '/')",
                {"got": _show(v), "why": f": it {why}" if why else ""},
            )
        return v

    @field_validator("client_id", "username")
    @classmethod
    def _mqtt_string(cls, v: str | None) -> str | None:
        why = topics.string_problem(v) if v is not None else None
        if why:
            raise PydanticCustomError(
                _OWN_ERROR,
                "{got} is not allowed: it {why}; allowed: text without control characters, "
                "at most 65,535 bytes",
                {"got": _show(v), "why": why},
            )
        return v

    @field_validator("password_env")
    @classmethod
    def _one_password_source(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and info.data.get("password_file") is not None:
            raise PydanticCustomError(
                _OWN_ERROR,
                "cannot be set together with mqtt.password_file; allowed: only one password "
                "source (a file or an environment variable)",
            )
        if v is not None and (not v or "=" in v or "\0" in v):
            raise PydanticCustomError(
                _OWN_ERROR,
                "{got} is not allowed; allowed: the name of an environment variable",
                {"got": _show(v)},
            )
        return v

    @model_validator(mode="after")
    def _topics_fit(self) -> MqttConfig:
        # The rule per key is checked above; what is left is the length of the topics the keys
        # are combined into (a 70,000-character node_id kills paho's network thread). Labels
        # are not known here: a one-character one stands in; `check_label_topics` checks them.
        if not self.enabled:
            return self
        client_id = self.client_id or f"soundmon-{self.node_id}"
        why = topics.string_problem(client_id)
        if why:
            key = "mqtt.client_id" if self.client_id else "mqtt.node_id"
            raise PydanticCustomError(
                _OWN_ERROR, "{key} is too long: the MQTT client id {got} {why}",
                {"key": key, "got": _show(client_id), "why": why},
            )  # fmt: skip
        for topic in self.topics("x"):
            why = topics.topic_problem(topic)
            if why:
                raise PydanticCustomError(
                    _OWN_ERROR, "{key} is too long: the topic {got} {why}",
                    {"key": self._longest_key(), "got": _show(topic), "why": why},
                )  # fmt: skip
        return self

    def _longest_key(self) -> str:
        """The topic-building key with the most bytes (what to shorten when a topic is too long)."""
        sizes = {"mqtt.node_id": self.node_id, "mqtt.base_topic": self.base_topic or "",
                 "mqtt.discovery_prefix": self.discovery_prefix if self.discovery else ""}  # fmt: skip
        return max(sizes, key=lambda k: len(sizes[k].encode("utf-8", "surrogatepass")))

    @property
    def base(self) -> str:
        """The topic prefix every soundmon topic starts with: `base_topic`, else
        `soundmon/<node_id>`."""
        return self.base_topic or f"soundmon/{self.node_id}"

    def topics(self, label: str | None = None) -> list[str]:
        """Every topic soundmon publishes or subscribes to with these settings (DESIGN.md's MQTT
        contract), with the per-label ones of `label` when given: what `monitor.topics` checks."""
        base = self.base
        out = [f"{base}/{name}" for name in ("status", "detection", "level", "stats", "scores")]
        if label is not None:
            level = discovery.label_topic_level(label)
            out.append(discovery.state_topic(base, label))
            out += [f"{base}/{kind}/{level}/{key}" for kind in ("set", "config") for key in ("threshold", "enabled")]
        if self.discovery:
            out.append(f"{self.discovery_prefix}/status")
            out.append(discovery.level_sensor_config(self, "", "")[0])
            if label is not None:
                out.append(discovery.binary_sensor_config(self, label, "", "")[0])
        return out

    def check_label_topics(self, labels: list[str], source: str = "model") -> None:
        """Every label of the model makes valid topics (`<base>/state/<label>`, its discovery
        config, ...): a bundle whose label holds a control character, or is so long that a topic
        passes 65,535 bytes, is refused at start instead of being dropped by the broker."""
        if not self.enabled:
            return
        for label in labels:
            why = topics.level_problem(discovery.label_topic_level(label))
            if why:
                raise ConfigError(
                    f"{source}: label {_show(label)} cannot be an MQTT topic level: it {why}"
                )
            for topic in self.topics(label):
                why = topics.topic_problem(topic)
                if why:
                    raise ConfigError(
                        f"{source}: label {_show(label)} makes the topic {_show(topic)}, which {why}"
                    )

    def password_path(self) -> Path | None:
        """`password_file` with `$NAME` / `${NAME}` replaced by environment variables.

        Why: systemd hands credentials (`LoadCredential=mqtt-password:/etc/soundmon/...`) to the
        service in a directory it names only at run time, `$CREDENTIALS_DIRECTORY`; so
        `password_file: ${CREDENTIALS_DIRECTORY}/mqtt-password` reads the credential. A variable
        that is not set is a ConfigError naming it (not a confusing "file not found").
        """
        if self.password_file is None:
            return None
        raw = str(self.password_file)

        def expand(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            value = os.environ.get(name)
            if value is None:
                hint = " (set by systemd's LoadCredential=; see the unit file)" if name == "CREDENTIALS_DIRECTORY" else ""
                raise ConfigError(f"mqtt.password_file: environment variable {name} is not set{hint}")
            return value

        return Path(_ENV_REF.sub(expand, raw))

    def check_tls_files(self) -> None:
        """With `tls`, the CA/certificate/key files load (ConfigError otherwise).

        Why here: a SIGHUP that changes MQTT settings must refuse a broken file before the
        running connection is torn down (the publisher loads them again when it connects)."""
        if not self.tls:
            return
        import ssl

        try:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise ConfigError(_one_line(f"mqtt.ca_file/cert_file/key_file: cannot load TLS files ({exc})")) from None

    def password(self) -> str | None:
        """The password from its file or environment variable (never stored in the config itself)."""
        path = self.password_path()
        if path is not None:
            try:
                return path.read_text().strip()
            except OSError as exc:
                raise ConfigError(_one_line(f"mqtt.password_file: cannot read {path} ({exc.strerror or exc})")) from None
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"mqtt.password_env: environment variable {self.password_env} is not set")
            return value
        return None


class StorageConfig(_Section):
    """State on disk.

    The clip keys take effect at the next start: a reload (SIGHUP) names them in its log line
    instead of applying them.
    """

    state_dir: Path = Field(
        default_factory=default_state_dir,
        examples=["/var/lib/soundmon"],
        description="Directory for the detection spool (`spool.sqlite3`), the clips (`clips/`), "
        "the values set over MQTT (`overrides.json`) and the labels published "
        "(`announced.json`). Default: ./state, relative to the working directory, or "
        "`$SOUNDMON_STATE_DIR` when that is set (the systemd unit sets it to the service's "
        "state directory, /var/lib/soundmon); a value in the file wins over both.",
    )
    spool_max_messages: int = Field(
        default=10000,
        ge=10,
        le=10_000_000,
        description="Detections kept on disk while the broker is unreachable; the oldest are "
        "dropped first (and counted).",
    )
    clips_enabled: bool = Field(
        default=False,
        description="true = save the audio around each detection as a FLAC clip in "
        "`<state_dir>/clips`.",
    )
    clip_pre_seconds: float = Field(
        default=2.0,
        ge=0.0,
        le=30.0,
        description="Seconds of audio kept before the window in which the event started (the "
        "clip always holds that window too).",
    )
    clip_post_seconds: float = Field(
        default=1.0, ge=0.0, le=30.0, description="Seconds of audio kept after the event's end."
    )
    clips_max_mb: float = Field(
        default=200.0,
        gt=0.0,
        description="Disk budget for clips, MB; the oldest clips are deleted beyond it.",
    )


class LoggingConfig(_Section):
    """Log output (stderr: the journal under systemd)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level: DEBUG, INFO, WARNING or ERROR (any case)."
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class Config(_Section):
    """The whole configuration file, one field per section (`load_config` / `parse_config` build
    and validate it; the sections' `Field` descriptions are the configuration reference).

    Checks that need the model (its labels) are methods here, run where the config meets the
    bundle: `check_against_labels`, and the per-label settings `thresholds` and `enabled_labels`.
    """

    audio: AudioConfig = Field(default_factory=AudioConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="before")
    @classmethod
    def _none_sections(cls, data: Any) -> Any:
        # A section written with no keys under it ("mqtt:") parses as None: treat it as empty.
        if isinstance(data, dict):
            return {k: ({} if v is None else v) for k, v in data.items()}
        return data

    def check_against_labels(
        self, labels: list[str], source: str = "config", default_watch: list[str] | None = None
    ) -> None:
        """Labels named in detection.watch and detection.classes must be labels of the model,
        and a class configured under detection.classes must be watched: a typo, or a class left
        out of the watch list, would otherwise silently leave the setting without effect.
        `default_watch` is the model's default list (its bundle's "watch"; None = every label).
        `source` starts the message. ConfigError (one line, with the allowed labels) on the first
        such problem."""
        known = set(labels)
        watch = self.detection.watch
        if isinstance(watch, list):
            unknown = [name for name in watch if name not in known]
            if unknown:
                name = unknown[0]
                raise ConfigError(
                    f"{source}: detection.watch: the model has no class {name!r}"
                    f"{_did_you_mean(name, labels)}; allowed: {_allowed_labels(labels)}"
                )
        unknown = [name for name in self.detection.classes if name not in known]
        if unknown:
            name = unknown[0]
            raise ConfigError(
                f"{source}: detection.classes.{name}: the model has no class {name!r}"
                f"{_did_you_mean(name, labels)}; allowed: {_allowed_labels(labels)}"
            )
        watched = set(self.detection.watched_labels(labels, default_watch))
        unwatched = [name for name in self.detection.classes if name not in watched]
        if unwatched:
            name = unwatched[0]
            where = "detection.watch" if watch is not None else "the model's default list (detection.watch: null)"
            raise ConfigError(
                f"{source}: detection.classes.{name}: {name!r} is not watched, so this has no "
                f"effect; add it to detection.watch or remove detection.classes.{name} (watched "
                f"by {where}: {_shown_labels(self.detection.watched_labels(labels, default_watch))})"
            )

    def thresholds(self, bundle_defaults: dict[str, float], labels: list[str]) -> dict[str, float]:
        """Effective per-label threshold: config > bundle default > detection.default_threshold."""
        return self.detection.thresholds(bundle_defaults, labels)

    def enabled_labels(self, labels: list[str]) -> set[str]:
        """Labels that may fire: all of them unless detection.classes.<label>.enabled is false."""
        return self.detection.enabled_labels(labels)


def check_model_path(cfg: Config) -> None:
    """The bundle named by model.path (or the shipped one) exists: `<p>.tflite` and `<p>.json`.

    Run by the CLI at start so a wrong path is a one-line configuration error (exit 2) rather
    than a failure deep in the model loader. Relative paths are relative to the working directory.
    """
    tflite, meta = bundle_paths(cfg.model.resolved_path())
    if cfg.model.path is None:
        hint = "the shipped model; set model.path or SOUNDMON_MODEL"
    else:
        hint = "a bundle is <name>.tflite + <name>.json"
    for f in (tflite, meta):
        if not f.exists():
            raise ConfigError(f"model.path: {f} not found ({hint})")
        if not f.is_file():
            raise ConfigError(f"model.path: {f} is not a file ({hint})")


def check_state_dir(cfg: Config) -> Path:
    """`storage.state_dir` exists (created if missing) and is a writable directory; returns it.

    Run at start (and on SIGHUP before a new state_dir is used) so a path that is a file, lies
    under a file, or cannot be created or written is one configuration error (exit 2: systemd's
    `RestartPreventExitStatus=2` then stops instead of restart-looping) and not a traceback.
    """
    path = Path(cfg.storage.state_dir)
    hint = "set storage.state_dir to a directory the service user can write"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"storage.state_dir: {path} is not a directory ({hint})")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = "a part of it is a file, not a directory" if isinstance(exc, (FileExistsError, NotADirectoryError)) \
            else (exc.strerror or str(exc))
        raise ConfigError(_one_line(f"storage.state_dir: cannot create {path}: {why} ({hint})")) from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(_one_line(f"storage.state_dir: cannot write in {path}: {exc.strerror or exc} ({hint})")) from None
    return path


def _safe_node_id(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return cleaned or "soundmon"


_MAX_SHOWN = 60


def _show(value: Any) -> str:
    """A config value as the user wrote it in YAML, shortened to keep the message on one line."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, Path):
        text = repr(str(value))
    else:
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _did_you_mean(word: str, choices: list[str]) -> str:
    """` (did you mean 'x'?)` for the likeliest choice, or "".

    Labels are slugs, often of long names (AudioSet's `smoke_detector_smoke_alarm`), so first the
    shortest choice in which each word typed starts a word (`smoke_alarm`, `gunshot`, `scream` ->
    `screaming`); then a close spelling (difflib: `doorbel`, `sirens`); then the shortest choice
    with a word that each word typed starts with (`knocking` -> `knock`); then the choice with
    the most words typed, the last one first (`glass_shatter` -> `shatter`: English names end on
    the thing); then a looser spelling."""
    typed = [w for w in re.split(r"[^a-z0-9]+", word.lower()) if w]

    def shortest_where(fits: Callable[[str, str], bool]) -> list[str]:
        holding = [c for c in choices if typed and all(any(fits(w, t) for t in c.split("_")) for w in typed)]
        return sorted(holding, key=len)[:1]

    def most_words() -> list[str]:
        def rank(choice: str) -> tuple[int, int, int]:
            hits = [i for i, w in enumerate(typed) if any(t.startswith(w) for t in choice.split("_"))]
            return (-len(hits), -max(hits, default=-1), len(choice))

        best = min(choices, key=rank, default=None)
        return [best] if best is not None and rank(best)[0] < 0 else []

    close = (
        shortest_where(lambda w, t: t.startswith(w))
        or difflib.get_close_matches(word, choices, n=1, cutoff=0.75)
        or shortest_where(lambda w, t: len(t) >= 3 and w.startswith(t))
        or most_words()
        or difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    )
    return f" (did you mean {close[0]!r}?)" if close else ""


_LISTED_LABELS = 30  # a model with more labels is not listed in full in an error line


def _allowed_labels(labels: list[str]) -> str:
    """The labels a key may name, for an error line: all of them for a small model; for a large
    one (AudioSet's 521) where to see them, since the line would be thousands of characters."""
    if len(labels) <= _LISTED_LABELS:
        return ", ".join(labels)
    return (f"one of the model's {len(labels)} labels (its JSON's \"labels\"; `soundmon classify "
            "--model <bundle> <recording>` shows the best ones for a recording)")


def _shown_labels(labels: list[str]) -> str:
    """A list of labels for an error line, shortened after `_LISTED_LABELS`."""
    if len(labels) <= _LISTED_LABELS:
        return ", ".join(labels)
    return ", ".join(labels[:_LISTED_LABELS]) + f", ... ({len(labels)} labels)"


def _fmt(x: float | None) -> str:
    return "null" if x is None else f"{x:g}"  # null: fast start turned off in the file


def field_bounds(metadata: list[Any]) -> tuple[Any, bool, Any, bool]:
    """(low, low is open, high, high is open) from a field's annotated-types constraints (None = no bound).

    Shared with tools/config_docs.py, which writes the same ranges into the reference page.
    """
    lo = hi = None
    lo_open = hi_open = False
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            lo = m.ge
        elif isinstance(m, annotated_types.Gt):
            lo, lo_open = m.gt, True
        elif isinstance(m, annotated_types.Le):
            hi = m.le
        elif isinstance(m, annotated_types.Lt):
            hi, hi_open = m.lt, True
    return lo, lo_open, hi, hi_open


def _range_text(metadata: list[Any]) -> str:
    """' from 1 to 65535', ' greater than 0', ... from a field's annotated-types constraints."""
    lo, lo_open, hi, hi_open = field_bounds(metadata)
    if lo is not None and hi is not None:
        if not lo_open and not hi_open:
            return f" from {_fmt(lo)} to {_fmt(hi)}"
        low = f"greater than {_fmt(lo)}" if lo_open else f"at least {_fmt(lo)}"
        high = f"less than {_fmt(hi)}" if hi_open else f"at most {_fmt(hi)}"
        return f" {low} and {high}"
    if lo is not None:
        return f" greater than {_fmt(lo)}" if lo_open else f" of at least {_fmt(lo)}"
    if hi is not None:
        return f" less than {_fmt(hi)}" if hi_open else f" of at most {_fmt(hi)}"
    return ""


def _unit(name: str) -> str:
    if name.endswith("_seconds") or name in ("level_interval", "stats_interval", "scores_interval",
                                              "reopen_backoff_max"):
        return " (seconds)"
    if name.endswith("_dbfs"):
        return " (dBFS)"
    if name.endswith("_mb"):
        return " (MB)"
    return ""


def _describe_type(ann: Any, metadata: list[Any], name: str = "") -> str:
    """What a field accepts, in words: 'an integer from 1 to 65535', 'true or false', ..."""
    origin = get_origin(ann)
    if origin in (Union, types.UnionType):
        args = get_args(ann)
        parts = [_describe_type(a, metadata, name) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return ", ".join(parts[:-1]) + (" or " if len(parts) > 1 else "") + parts[-1]
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(ann))
    if origin is list:
        return "a list of labels"
    if origin is dict:
        value = get_args(ann)[1]
        keys = ", ".join(value.model_fields) if isinstance(value, type) and issubclass(value, BaseModel) else "..."
        return f"a mapping of class name to {{{keys}}}"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return f"a mapping with the keys {', '.join(ann.model_fields)}"
    if ann is bool:
        return "true or false"
    if ann is int:
        return f"an integer{_range_text(metadata)}{_unit(name)}"
    if ann is float:
        return f"a number{_range_text(metadata)}{_unit(name)}"
    if ann is str:
        return "a string"
    if isinstance(ann, type) and issubclass(ann, Path):
        return "a path (a string)"
    return getattr(ann, "__name__", str(ann))


def _null_meaning(field: FieldInfo | None) -> str:
    """' (null = the bundle's default)' from a description that says 'null = ...' (up to the
    end of that clause: a ';' or the end of the sentence), without its Markdown backticks."""
    desc = (field.description or "") if field is not None else ""
    m = re.search(r"\bnull = (.+?)(?:;|\.\s|\.?$)", desc)
    return f" (null = {m.group(1).replace('`', '').strip()})" if m else ""


def _resolve(loc: tuple[Any, ...]) -> tuple[list[str], Any, FieldInfo | None, str]:
    """Follow an error location through the schema.

    Returns (key path, annotation at the end, its FieldInfo or None, field name). Parts of the
    location that are not keys (pydantic's union member tags such as 'int', '[key]') end the walk.
    """
    path: list[str] = []
    ann: Any = Config
    field: FieldInfo | None = None
    name = ""
    for part in loc:
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            sub = ann.model_fields.get(str(part))
            if sub is None:
                break
            path.append(str(part))
            ann, field, name = sub.annotation, sub, str(part)
        elif get_origin(ann) is dict and part != "[key]":
            path.append(str(part))
            ann, field, name = get_args(ann)[1], None, str(part)
        else:
            break
    return path, ann, field, name


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the mapping at `loc` ([] when it is not a known section)."""
    path, ann, _, _ = _resolve(loc)
    if len(path) == len(loc) and isinstance(ann, type) and issubclass(ann, BaseModel):
        return list(ann.model_fields)
    return []


def _describe_error(err: dict[str, Any]) -> tuple[str, str]:
    """(key path, one-line message naming the key path and what is allowed there)."""
    loc = tuple(err["loc"])
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        where = ".".join(str(x) for x in loc)
        allowed = _allowed_keys(loc[:-1])
        if not loc[:-1]:
            return where, f"{where}: unknown section{_did_you_mean(key, allowed)}; allowed sections: {', '.join(allowed)}"
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return where, f"{where}: unknown key{_did_you_mean(key, allowed)}{hint}"
    path, ann, field, name = _resolve(loc)
    where = ".".join(path) or "<top level>"
    if kind == _OWN_ERROR:
        msg = err["msg"]  # a section-level check names its key itself ("mqtt.node_id is too long")
        return where, msg if msg.startswith(f"{where}.") else f"{where}: {msg}"
    if kind == "invalid_key" or loc[-1:] == ("[key]",):
        return where, f"{where}: key {_show(got)} is not allowed; keys must be names (strings)"
    if path and kind != "value_error":
        metadata = list(field.metadata) if field is not None else []
        allowed = _describe_type(ann, metadata, name) + _null_meaning(field)
        return where, f"{where}: expected {allowed}, got {_show(got)}"
    msg = err["msg"].removeprefix("Value error, ")
    shown = f" (got {_show(got)})" if not isinstance(got, (dict, list)) else ""
    return where, f"{where}: {msg}{shown}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def parse_config(data: Any, source: str = "config") -> Config:
    """Validate a parsed YAML document; raise ConfigError with one line naming the key path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else _show(data)
        raise ConfigError(
            f"{source}: the top level must be a mapping of sections "
            f"({', '.join(Config.model_fields)}), got {kind}"
        )
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        # One problem per key path (a union reports one error per member type).
        problems: dict[str, str] = {}
        for err in exc.errors():
            where, message = _describe_error(err)
            problems.setdefault(where, message)
        messages = list(problems.values())
        more = f" (and {len(messages) - 1} more problem(s))" if len(messages) > 1 else ""
        raise ConfigError(_one_line(f"{source}: {messages[0]}{more}")) from None
    if cfg.detection.window_seconds is not None:
        # Never read: every window is the bundle's. Accepted (older files load), but said once
        # per load (start and SIGHUP) so nobody believes a window length they set is in effect.
        log.warning("%s: detection.window_seconds is deprecated and has no effect (every window is the "
                    "model's own length, its bundle's window_seconds); remove the key", source)  # fmt: skip
    return cfg


def config_source(path: str | Path | None) -> str:
    """How an error names a configuration: `config <path>`, or `config` for the built-in defaults."""
    return "config" if path is None else f"config {path}"


def load_config(path: str | Path | None) -> Config:
    """Read and validate a YAML file; None gives the defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config {path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config {path}: is a directory, not a YAML file") from None
    except PermissionError:
        raise ConfigError(f"config {path}: permission denied (the service user must be able to read it)") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"config {path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(_one_line(f"config {path}: cannot read ({exc.strerror or exc})")) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader that refuses duplicate keys
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(_one_line(f"config {path}: YAML syntax error{where}: {problem}")) from None
    return parse_config(data, source=config_source(path))


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader, except that a key given twice in one mapping is an error: PyYAML would
    silently keep the last value, hiding an edit the user believes is in effect."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)
