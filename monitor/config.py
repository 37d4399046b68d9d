"""Typed configuration (config.yaml), validated at start with pydantic.

Every key has a default, so an empty file is a valid configuration. Unknown keys, wrong types
and out-of-range values are errors that name the key path and what is allowed. Checks that
need the model (class names, the model file) run in `check_against_labels` / `resolve_model_path`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    "default_model_path",
    "load_config",
    "parse_config",
]

REPO_MODELS = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL_NAME = "urban10"


def default_model_path() -> Path:
    """The shipped bundle: $SOUNDMON_MODEL, else models/urban10 next to the package."""
    env = os.environ.get("SOUNDMON_MODEL")
    return Path(env) if env else REPO_MODELS / DEFAULT_MODEL_NAME


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AudioConfig(_Section):
    """Where audio comes from. `device`: None = system default, an int = PortAudio index, a str = name substring."""

    device: int | str | None = None
    sample_rate: int | None = Field(default=None, gt=0, description="None = the device's default rate")
    channels: int = Field(default=1, ge=1, le=32)
    block_seconds: float = Field(default=0.1, gt=0.0, le=1.0)
    ring_seconds: float = Field(default=10.0, ge=1.0, le=300.0)
    stall_seconds: float = Field(default=3.0, gt=0.0, description="no callbacks this long = device stalled")
    silence_seconds: float = Field(default=10.0, gt=0.0, description="only digital zeros this long = degraded")
    reopen_backoff_max: float = Field(default=30.0, gt=0.0)


class ModelConfig(_Section):
    path: Path | None = Field(default=None, description="bundle path without suffix; None = shipped model")
    threads: int = Field(default=1, ge=1, le=64)

    def resolved_path(self) -> Path:
        return self.path if self.path is not None else default_model_path()


class ClassConfig(_Section):
    enabled: bool = True
    threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="None = the bundle's default")


class DetectionConfig(_Section):
    window_seconds: float | None = Field(default=None, gt=0, description="None = the model's window (4.0 s)")
    hop_seconds: float = Field(default=0.5, ge=0.01, le=10.0)
    smoothing_windows: int = Field(default=3, ge=1, le=100, description="mean of the last N window scores")
    default_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    release_ratio: float = Field(default=0.8, gt=0.0, le=1.0, description="event ends below threshold*ratio")
    hold_seconds: float = Field(default=1.0, ge=0.0, le=600.0)
    cooldown_seconds: float = Field(default=2.0, ge=0.0, le=3600.0)
    min_level_dbfs: float = Field(default=-70.0, ge=-200.0, le=0.0)
    level_interval: float = Field(default=5.0, ge=0.0, description="seconds between level messages; 0 = off")
    classes: dict[str, ClassConfig] = Field(default_factory=dict)

    @field_validator("classes", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v


class MqttConfig(_Section):
    enabled: bool = True
    host: str = "localhost"
    port: int = Field(default=1883, ge=1, le=65535)
    node_id: str = Field(default_factory=lambda: _safe_node_id(socket.gethostname()))
    base_topic: str | None = Field(default=None, description="None = soundmon/<node_id>")
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = Field(default=None, description="name of an environment variable")
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False
    keepalive: int = Field(default=30, ge=5, le=3600)
    reconnect_max_seconds: float = Field(default=60.0, gt=0)
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    stats_interval: float = Field(default=60.0, gt=0)

    @field_validator("node_id")
    @classmethod
    def _node_id_chars(cls, v: str) -> str:
        if not v or any(c in v for c in "/#+ ") :
            raise ValueError("node_id must be non-empty without '/', '#', '+' or spaces")
        return v

    @field_validator("base_topic")
    @classmethod
    def _base_topic_chars(cls, v: str | None) -> str | None:
        if v is not None and (not v or "#" in v or "+" in v or v.endswith("/")):
            raise ValueError("base_topic must be non-empty, without wildcards or a trailing '/'")
        return v

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("set only one of password_file and password_env")
        return self

    @property
    def base(self) -> str:
        return self.base_topic or f"soundmon/{self.node_id}"

    def password(self) -> str | None:
        """The password from its file or environment variable (never stored in the config itself)."""
        if self.password_file is not None:
            try:
                return self.password_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"mqtt.password_file: cannot read {self.password_file} ({exc.strerror})") from None
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"mqtt.password_env: environment variable {self.password_env} is not set")
            return value
        return None


class StorageConfig(_Section):
    state_dir: Path = Path("./state")
    spool_max_messages: int = Field(default=10000, ge=10, le=10_000_000)
    clips_enabled: bool = False
    clip_pre_seconds: float = Field(default=2.0, ge=0.0, le=30.0)
    clip_post_seconds: float = Field(default=1.0, ge=0.0, le=30.0)
    clips_max_mb: float = Field(default=200.0, gt=0.0)


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class Config(_Section):
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

    def check_against_labels(self, labels: list[str], source: str = "config") -> None:
        """Class names under detection.classes must be labels of the model."""
        unknown = [name for name in self.detection.classes if name not in labels]
        if unknown:
            raise ConfigError(
                f"{source}: detection.classes.{unknown[0]}: the model has no class '{unknown[0]}'; "
                f"allowed: {', '.join(labels)}"
            )

    def thresholds(self, bundle_defaults: dict[str, float], labels: list[str]) -> dict[str, float]:
        """Effective per-label threshold: config > bundle default > detection.default_threshold."""
        out = {}
        for label in labels:
            cls = self.detection.classes.get(label)
            if cls is not None and cls.threshold is not None:
                out[label] = cls.threshold
            else:
                out[label] = bundle_defaults.get(label, self.detection.default_threshold)
        return out

    def enabled_labels(self, labels: list[str]) -> set[str]:
        return {x for x in labels if self.detection.classes.get(x, ClassConfig()).enabled}


def _safe_node_id(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return cleaned or "soundmon"


def _describe_error(err: dict[str, Any], model: type[BaseModel]) -> str:
    """One line: the key path and what is allowed there."""
    loc = ".".join(str(x) for x in err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = err["loc"][:-1]
        allowed = _allowed_keys(model, parent)
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"{loc}: unknown key{hint}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    got = err.get("input")
    got_txt = f" (got {got!r})" if got is not None and not isinstance(got, (dict, list)) else ""
    return f"{loc or '<top level>'}: {msg}{got_txt}"


def _allowed_keys(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in path:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                if current is DetectionConfig:
                    return []
                return []
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                current = ann
            elif str(part) == "classes":
                current = "classes"
            else:
                return []
        elif current == "classes":
            current = ClassConfig
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def parse_config(data: Any, source: str = "config") -> Config:
    """Validate a parsed YAML document; raise ConfigError with one line naming the key path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe_error(errors[0], Config)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {first}{more}") from None


def load_config(path: str | Path | None) -> Config:
    """Read and validate a YAML file; None gives the defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config {path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config {path}: is a directory, not a YAML file") from None
    except PermissionError:
        raise ConfigError(f"config {path}: permission denied") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {path}: cannot read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config {path}: YAML syntax error{where}: {problem}") from None
    return parse_config(data, source=f"config {path}")
