"""Tuning over MQTT: parse `<base>/set/<label>/<key>` commands and keep the values set that way.

Pure logic plus one small JSON file; no MQTT here (the publisher subscribes and hands topics
and payloads over, the daemon applies the result through the same path as a SIGHUP).

Precedence, strongest first: a value set over MQTT, `config.yaml` (`detection.classes`), the
bundle's default. `Overrides.apply` therefore writes the MQTT values over the configured
`detection.classes` and leaves everything else alone; an empty payload (threshold or enabled)
removes the override, so the configured value (or the bundle's default) is in force again.

Everything a publisher sends is untrusted: payloads are bounded, decoded strictly and checked
(a threshold is a finite number in [0, 1]; enabled is `ON` or `OFF`); labels must be labels of
the running bundle (so a topic can never name a file), and the store is one fixed file in the
state directory, written atomically (temporary file + rename).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable

    from monitor.config import DetectionConfig

__all__ = [
    "OVERRIDES_FILENAME",
    "Command",
    "CommandError",
    "Overrides",
    "parse_command",
]

OVERRIDES_FILENAME = "overrides.json"
MAX_PAYLOAD_BYTES = 64
"""No valid command is longer ("0.123456789" or "OFF"); anything larger is refused (the publisher
keeps one byte more of it: MQTT has delivered the whole message by then, so a broker ACL on
`<base>/set/#` is what keeps large ones out)."""

Key = Literal["threshold", "enabled"]


class CommandError(ValueError):
    """A command that cannot be applied; `str()` is one line saying why (logged and ignored)."""


@dataclass(frozen=True)
class Command:
    """One parsed command: `value` is a threshold, a bool for `enabled`, or None = configured value
    (an empty payload, for either key)."""

    label: str
    key: Key
    value: float | bool | None


def parse_command(base: str, topic: str, payload: bytes, labels: Iterable[str]) -> Command:
    """`<base>/set/<label>/threshold` or `.../enabled` and its payload -> a Command.

    Raises CommandError (one line) for any topic or payload that is not a valid command.
    """
    prefix = f"{base}/set/"
    if not topic.startswith(prefix):
        raise CommandError(f"not a control topic: {_short(topic)}")
    parts = topic[len(prefix) :].split("/")
    if len(parts) != 2 or parts[1] not in ("threshold", "enabled"):
        raise CommandError(f"{_short(topic)}: expected {prefix}<label>/threshold or {prefix}<label>/enabled")
    label, key = parts[0], parts[1]
    if label not in set(labels):
        raise CommandError(f"{_short(topic)}: the model has no watched label {_short(label)}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandError(f"{topic}: payload longer than {MAX_PAYLOAD_BYTES} bytes")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CommandError(f"{topic}: payload is not UTF-8 text") from None
    if key == "threshold":
        return Command(label, "threshold", _threshold(topic, text))
    return Command(label, "enabled", _switch(topic, text))


def _threshold(topic: str, text: str) -> float | None:
    if not text:
        return None  # back to the configured value
    try:
        value = float(text)
    except ValueError:
        raise CommandError(f"{topic}: {_short(text)} is not a number; send one in [0, 1], or nothing") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise CommandError(f"{topic}: {_short(text)} is outside [0, 1]")
    return value


def _switch(topic: str, text: str) -> bool | None:
    if not text:
        return None  # back to the configured value
    upper = text.upper()
    if upper not in ("ON", "OFF"):
        raise CommandError(f"{topic}: {_short(text)} is not ON or OFF (or nothing)")
    return upper == "ON"


def _short(text: str, limit: int = 40) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


class Overrides:
    """The values set over MQTT, per label, persisted in `<state_dir>/overrides.json`.

    A missing file is an empty store; an unreadable or malformed one is reported by `load`
    (the caller logs it once) and treated as empty, never a reason not to run.

    Parameters: `path`, the JSON file (`in_state_dir` names the usual one). `thresholds` (label
    -> value in [0, 1]) and `enabled` (label -> bool) hold the values of the running model's
    labels; a label absent from both has no override. Values the file holds for labels the
    running model lacks (set under another model) are kept and written back by `save`, so
    switching models and back restores them.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.thresholds: dict[str, float] = {}
        self.enabled: dict[str, bool] = {}
        self._other_thresholds: dict[str, float] = {}
        self._other_enabled: dict[str, bool] = {}

    @classmethod
    def in_state_dir(cls, state_dir: str | Path) -> Overrides:
        """An empty store for `<state_dir>/overrides.json` (call `load` to read it)."""
        return cls(Path(state_dir) / OVERRIDES_FILENAME)

    def moved_to(self, path: Path) -> Overrides:
        """A store for `path` holding the same values (all labels'), not yet saved."""
        out = Overrides(path)
        out.thresholds, out.enabled = dict(self.thresholds), dict(self.enabled)
        out._other_thresholds, out._other_enabled = dict(self._other_thresholds), dict(self._other_enabled)
        return out

    def load(self, labels: Iterable[str]) -> str | None:
        """Read the file, keeping only valid values of `labels` (the running bundle's); returns a
        one-line problem (the store is then empty) or None (also for a missing file)."""
        known = set(labels)
        self.thresholds, self.enabled = {}, {}
        self._other_thresholds, self._other_enabled = {}, {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: bad JSON, a huge number
            return f"{self.path}: unreadable ({_short(str(exc), 120)}); starting without values set over MQTT"
        if not isinstance(data, dict):
            return f"{self.path}: not a JSON object; starting without values set over MQTT"
        thresholds, enabled = data.get("thresholds") or {}, data.get("enabled") or {}
        if not isinstance(thresholds, dict) or not isinstance(enabled, dict):
            return (f"{self.path}: \"thresholds\" and \"enabled\" must be JSON objects; starting without "
                    "values set over MQTT")  # fmt: skip
        for label, value in thresholds.items():
            # (a comparison, not float(): a 400-digit integer would overflow; NaN and inf fail it)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
                (self.thresholds if label in known else self._other_thresholds)[label] = float(value)
        for label, value in enabled.items():
            if isinstance(value, bool):
                (self.enabled if label in known else self._other_enabled)[label] = value
        return None

    def set(self, cmd: Command) -> bool:
        """Record a command; True when it changed anything (the caller then saves and applies)."""
        if cmd.key == "threshold":
            if cmd.value is None:
                return self.thresholds.pop(cmd.label, None) is not None
            old = self.thresholds.get(cmd.label)
            self.thresholds[cmd.label] = float(cmd.value)
            return old != float(cmd.value)
        if cmd.value is None:
            return self.enabled.pop(cmd.label, None) is not None
        old_on = self.enabled.get(cmd.label)
        self.enabled[cmd.label] = bool(cmd.value)
        return old_on != bool(cmd.value)

    def save(self) -> None:
        """Write atomically (a crash leaves the old file or the new one, never half of one).

        Creates the directory if needed; an OSError (read-only or full disk) reaches the caller."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"thresholds": {**self._other_thresholds, **self.thresholds},
                "enabled": {**self._other_enabled, **self.enabled}}  # fmt: skip
        text = json.dumps(data, indent=1, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".overrides-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        # the rename itself reaches the disk (else a power cut soon after can bring the old file back)
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def apply(self, detection: DetectionConfig) -> DetectionConfig:
        """A copy of `detection` with the MQTT values written over `classes` (they win)."""
        from monitor.config import ClassConfig

        classes = dict(detection.classes)
        for label in sorted(set(self.thresholds) | set(self.enabled)):
            current = classes.get(label, ClassConfig())
            update: dict[str, object] = {}
            if label in self.thresholds:
                update["threshold"] = self.thresholds[label]
            if label in self.enabled:
                update["enabled"] = self.enabled[label]
            classes[label] = current.model_copy(update=update)
        return detection.model_copy(update={"classes": classes})

    def origin(self, label: str, key: Key, detection: DetectionConfig) -> str:
        """Where `label`'s value of `key` in force comes from (for the log): `mqtt`, `config`, or
        else `model` for a threshold (the bundle's default) and `default` for enabled."""
        store = self.thresholds if key == "threshold" else self.enabled
        if label in store:
            return "mqtt"
        cls = detection.classes.get(label)
        if cls is not None and (cls.threshold is not None if key == "threshold" else "enabled" in cls.model_fields_set):
            return "config"
        return "model" if key == "threshold" else "default"
