"""config.yaml validation: every mistake is one line naming the key path and what is allowed.

Each malformed case asserts a `ConfigError` (exit status 2) whose message is a single line that
contains the key path and the allowed values or keys. The shipped config.yaml must load and
equal the built-in defaults, and docs/configuration.md must describe every key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from monitor.config import (
    Config,
    check_model_path,
    load_config,
    parse_config,
)
from monitor.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
LABELS = [
    "air_conditioner",
    "car_horn",
    "children_playing",
    "dog_bark",
    "drilling",
    "engine_idling",
    "gun_shot",
    "jackhammer",
    "siren",
    "street_music",
]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment overrides must not leak in from the shell running the tests."""
    monkeypatch.delenv("SOUNDMON_STATE_DIR", raising=False)
    monkeypatch.delenv("SOUNDMON_MODEL", raising=False)


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(tmp_path: Path, text: str) -> str:
    """Load `text` as a config file; return the ConfigError message (checked to be one line)."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return checked(info.value)


def checked(err: ConfigError) -> str:
    msg = str(err)
    assert err.exit_code == 2
    assert "\n" not in msg and msg == msg.strip(), repr(msg)
    return msg


# -- malformed configurations ------------------------------------------------------------------------

# (YAML text, substrings the one-line message must contain: the key path, then what is allowed)
MALFORMED = {
    "unknown top-level section": (
        "mqqt:\n  host: broker\n",
        ["mqqt: unknown section", "did you mean 'mqtt'", "allowed sections: audio, model, detection, mqtt, storage, logging"],
    ),
    "unknown key in a section": (
        "mqtt:\n  hots: broker\n",
        ["mqtt.hots: unknown key", "did you mean 'host'", "allowed keys: enabled, host, port, node_id"],
    ),
    "unknown key in a class": (
        "detection:\n  classes:\n    siren: {thresh: 0.7}\n",
        ["detection.classes.siren.thresh: unknown key", "allowed keys: enabled, threshold"],
    ),
    "port as a word": (
        "mqtt:\n  port: abc\n",
        ["mqtt.port: expected an integer from 1 to 65535, got 'abc'"],
    ),
    "port out of range": (
        "mqtt:\n  port: 70000\n",
        ["mqtt.port: expected an integer from 1 to 65535, got 70000"],
    ),
    "port as a boolean": (
        "mqtt:\n  port: yes\n",  # YAML 1.1 reads `yes` as true; pydantic would make it 1
        ["mqtt.port: expected an integer from 1 to 65535, got true"],
    ),
    "port with a fraction": (
        "mqtt:\n  port: 1883.5\n",
        ["mqtt.port: expected an integer from 1 to 65535, got 1883.5"],
    ),
    "hop_seconds as a word": (
        "detection:\n  hop_seconds: fast\n",
        ["detection.hop_seconds: expected a number from 0.01 to 10 (seconds), got 'fast'"],
    ),
    "hop_seconds not a number": (
        "detection:\n  hop_seconds: .nan\n",
        ["detection.hop_seconds: expected a number from 0.01 to 10 (seconds), got nan"],
    ),
    "infinite stall_seconds": (
        "audio:\n  stall_seconds: .inf\n",
        ["audio.stall_seconds: expected a number greater than 0 (seconds), got inf"],
    ),
    "threshold above 1": (
        "detection:\n  classes:\n    siren: {threshold: 1.5}\n",
        ["detection.classes.siren.threshold: expected a number from 0 to 1 or null", "got 1.5"],
    ),
    "threshold below 0": (
        "detection:\n  classes:\n    siren: {threshold: -0.1}\n",
        ["detection.classes.siren.threshold: expected a number from 0 to 1 or null", "got -0.1"],
    ),
    "default_threshold above 1": (
        "detection:\n  default_threshold: 2\n",
        ["detection.default_threshold: expected a number from 0 to 1, got 2"],
    ),
    "smoothing_windows with a fraction": (
        "detection:\n  smoothing_windows: 2.5\n",
        ["detection.smoothing_windows: expected an integer from 1 to 100, got 2.5"],
    ),
    "enabled not a boolean": (
        "detection:\n  classes:\n    siren: {enabled: maybe}\n",
        ["detection.classes.siren.enabled: expected true or false, got 'maybe'"],
    ),
    "classes as a list": (
        "detection:\n  classes: [siren, dog_bark]\n",
        ["detection.classes: expected a mapping of class name to {enabled, threshold, smoothing_windows, fast_start_alone}"],
    ),
    "node_id with a slash": (
        "mqtt:\n  node_id: kitchen/pi\n",
        ["mqtt.node_id: 'kitchen/pi' is not allowed", "allowed: a non-empty name without '/', '#', '+'"],
    ),
    "node_id with a space": (
        "mqtt:\n  node_id: kitchen pi\n",
        ["mqtt.node_id: 'kitchen pi' is not allowed", "whitespace"],
    ),
    "base_topic with a wildcard": (
        "mqtt:\n  base_topic: 'home/#'\n",
        ["mqtt.base_topic: 'home/#' is not allowed", "wildcard", "allowed: a non-empty MQTT topic (no '#', '+'"],
    ),
    "both password sources": (
        "mqtt:\n  password_file: /etc/soundmon/pw\n  password_env: MQTT_PW\n",
        ["mqtt.password_env: cannot be set together with mqtt.password_file", "allowed: only one"],
    ),
    "logging level LOUD": (
        "logging:\n  level: LOUD\n",
        ["logging.level: expected one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'"],
    ),
    "section that is a scalar": (
        "mqtt: 5\n",
        ["mqtt: expected a mapping with the keys enabled, host, port", "got 5"],
    ),
    "device as a list": (
        "audio:\n  device: [1, 2]\n",
        ["audio.device: expected an integer, a string or null", "got [1, 2]"],
    ),
    "state_dir as null": (
        "storage:\n  state_dir: null\n",
        ["storage.state_dir: expected a path (a string), got null"],
    ),
    "top level is a list": (
        "- audio\n- mqtt\n",
        ["top level must be a mapping of sections (audio, model, detection, mqtt, storage, logging), got a list"],
    ),
    "top level is a scalar": (
        "just some words\n",
        ["top level must be a mapping of sections", "got 'just some words'"],
    ),
    "YAML syntax error": (
        "mqtt:\n  host: broker\n   port: 1883\n",
        ["YAML syntax error at line 3, column 8", "mapping values are not allowed here"],
    ),
    "tab indentation": (
        "mqtt:\n\thost: broker\n",
        ["YAML syntax error at line 2, column 1"],
    ),
    "duplicate key": (
        "mqtt:\n  port: 1883\n  host: a\n  port: 1884\n",
        ["at line 4, column 3", "duplicate key 'port' (first at line 2)"],
    ),
    "duplicate section": (
        "mqtt: {host: a}\naudio: {}\nmqtt: {host: b}\n",
        ["at line 3, column 1", "duplicate key 'mqtt' (first at line 1)"],
    ),
}


@pytest.mark.parametrize("text, expected", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_config_is_one_clear_line(tmp_path: Path, text: str, expected: list[str]):
    msg = config_error(tmp_path, text)
    assert msg.startswith(f"config {tmp_path / 'config.yaml'}: ")
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_several_problems_report_the_first_and_count_the_rest(tmp_path: Path):
    msg = config_error(tmp_path, "mqtt:\n  host: [a]\n  port: abc\naudio:\n  channels: 0\n")
    assert "audio.channels: expected an integer from 1 to 32, got 0" in msg
    assert msg.endswith("(and 2 more problem(s))")


def test_unknown_class_name_against_the_model_labels(tmp_path: Path):
    cfg = load_config(write(tmp_path, "detection:\n  classes:\n    sirene: {threshold: 0.7}\n"))
    with pytest.raises(ConfigError) as info:
        cfg.check_against_labels(LABELS, source="config x.yaml")
    msg = checked(info.value)
    assert msg.startswith("config x.yaml: detection.classes.sirene: the model has no class 'sirene'")
    assert "did you mean 'siren'" in msg
    assert "allowed: " + ", ".join(LABELS) in msg
    # Known labels pass.
    load_config(write(tmp_path, "detection:\n  classes:\n    siren: {threshold: 0.7}\n")).check_against_labels(LABELS)


# -- the file itself -------------------------------------------------------------------------------------


def test_file_not_found(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert checked(info.value) == f"config {tmp_path / 'nope.yaml'}: file not found"


def test_directory_instead_of_a_file(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert checked(info.value) == f"config {tmp_path}: is a directory, not a YAML file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file anyway; see the monkeypatched variant")
def test_unreadable_file_chmod(tmp_path: Path):
    path = write(tmp_path, "mqtt: {}\n")
    path.chmod(0)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "permission denied" in checked(info.value)


def test_unreadable_file_permission_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Tests run as root here, so simulate what an unprivileged service user would get.
    path = write(tmp_path, "mqtt: {}\n")
    real_read_text = Path.read_text

    def deny(self: Path, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", deny)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert checked(info.value).startswith(f"config {path}: permission denied")


def test_binary_file_is_not_utf8(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"mqtt:\n  host: caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert checked(info.value) == f"config {path}: not UTF-8 text (byte 0xe9 on line 2); save it as UTF-8"


# -- the model path ------------------------------------------------------------------------------------


def test_missing_model_file(tmp_path: Path):
    cfg = load_config(write(tmp_path, f"model:\n  path: {tmp_path / 'mymodel'}\n"))
    assert cfg.model.resolved_path() == tmp_path / "mymodel"
    with pytest.raises(ConfigError) as info:
        check_model_path(cfg)
    msg = checked(info.value)
    assert msg.startswith(f"model.path: {tmp_path / 'mymodel.tflite'} not found")


def test_model_json_missing_and_then_complete(tmp_path: Path):
    (tmp_path / "mymodel.tflite").write_bytes(b"TFL3")
    cfg = parse_config({"model": {"path": str(tmp_path / "mymodel.tflite")}})  # suffix accepted
    with pytest.raises(ConfigError) as info:
        check_model_path(cfg)
    assert checked(info.value).startswith(f"model.path: {tmp_path / 'mymodel.json'} not found")
    (tmp_path / "mymodel.json").write_text("{}")
    check_model_path(cfg)  # both files present: no error (their content is the loader's job)


def test_model_path_that_is_a_directory(tmp_path: Path):
    (tmp_path / "m.tflite").mkdir()
    with pytest.raises(ConfigError) as info:
        check_model_path(parse_config({"model": {"path": str(tmp_path / "m")}}))
    assert "is not a file" in checked(info.value)


def test_default_model_follows_soundmon_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOUNDMON_MODEL", str(tmp_path / "elsewhere"))
    cfg = Config()
    assert cfg.model.resolved_path() == tmp_path / "elsewhere"
    with pytest.raises(ConfigError) as info:
        check_model_path(cfg)
    msg = checked(info.value)
    assert msg.startswith(f"model.path: {tmp_path / 'elsewhere.tflite'} not found")
    assert "SOUNDMON_MODEL" in msg


# -- valid configurations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "# only a comment\n", "---\n", "{}\n"],
    ids=["empty", "blank lines", "comment", "document marker", "empty mapping"],
)
def test_empty_file_is_the_defaults(tmp_path: Path, text: str):
    assert load_config(write(tmp_path, text)) == Config()


def test_sections_with_no_keys_are_valid(tmp_path: Path):
    text = "audio:\nmodel:\ndetection:\n  classes:\nmqtt:\nstorage:\nlogging:\n"
    assert load_config(write(tmp_path, text)) == Config()


def test_no_config_file_is_the_defaults():
    assert load_config(None) == Config()


def test_per_class_threshold(tmp_path: Path):
    cfg = load_config(write(tmp_path, "detection:\n  classes:\n    siren: {threshold: 0.7}\n"))
    assert cfg.detection.classes["siren"].threshold == 0.7
    assert cfg.detection.classes["siren"].enabled is True


def test_class_with_no_keys_is_valid(tmp_path: Path):
    cfg = load_config(write(tmp_path, "detection:\n  classes:\n    siren:\n"))
    assert cfg.detection.classes["siren"].threshold is None
    assert cfg.detection.classes["siren"].enabled is True


def test_common_spellings_that_are_fine(tmp_path: Path):
    text = "logging:\n  level: debug\nmqtt:\n  port: '8883'\n  tls: yes\naudio:\n  device: USB\n"
    cfg = load_config(write(tmp_path, text))
    assert cfg.logging.level == "DEBUG"
    assert cfg.mqtt.port == 8883 and cfg.mqtt.tls is True
    assert cfg.audio.device == "USB"
    assert parse_config({"audio": {"device": 2}}).audio.device == 2
    assert parse_config({"detection": {"hop_seconds": 1}}).detection.hop_seconds == 1.0


# -- thresholds and enabled labels ---------------------------------------------------------------------


def test_thresholds_precedence():
    cfg = parse_config(
        {
            "detection": {
                "default_threshold": 0.3,
                "classes": {
                    "siren": {"threshold": 0.7},  # config wins over the bundle
                    "dog_bark": {"enabled": False},  # no threshold here: bundle default
                },
            }
        }
    )
    bundle = {"siren": 0.6, "dog_bark": 0.4}
    out = cfg.thresholds(bundle, ["siren", "dog_bark", "car_horn"])
    assert out == {"siren": 0.7, "dog_bark": 0.4, "car_horn": 0.3}  # car_horn: default_threshold


def test_thresholds_with_no_bundle_defaults_use_default_threshold():
    assert Config().thresholds({}, ["siren", "gun_shot"]) == {"siren": 0.5, "gun_shot": 0.5}


def test_enabled_labels():
    cfg = parse_config({"detection": {"classes": {"air_conditioner": {"enabled": False}, "siren": {"threshold": 0.9}}}})
    assert cfg.enabled_labels(LABELS) == set(LABELS) - {"air_conditioner"}
    assert Config().enabled_labels(LABELS) == set(LABELS)


# -- SOUNDMON_STATE_DIR ------------------------------------------------------------------------------------


def test_state_dir_default():
    assert Config().storage.state_dir == Path("./state")


def test_state_dir_env_overrides_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOUNDMON_STATE_DIR", "/var/lib/soundmon")
    assert load_config(write(tmp_path, "mqtt: {}\n")).storage.state_dir == Path("/var/lib/soundmon")
    assert load_config(write(tmp_path, "storage:\n  clips_enabled: true\n")).storage.state_dir == Path(
        "/var/lib/soundmon"
    )
    assert load_config(None).storage.state_dir == Path("/var/lib/soundmon")


def test_state_dir_in_the_file_wins_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOUNDMON_STATE_DIR", "/var/lib/soundmon")
    cfg = load_config(write(tmp_path, "storage:\n  state_dir: /srv/sound\n"))
    assert cfg.storage.state_dir == Path("/srv/sound")


def test_empty_state_dir_env_is_ignored(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOUNDMON_STATE_DIR", "")
    assert Config().storage.state_dir == Path("./state")


# -- the shipped config.yaml -----------------------------------------------------------------------------


def _schema_keys() -> dict[str, list[str]]:
    return {name: list(field.annotation.model_fields) for name, field in Config.model_fields.items()}


def test_shipped_config_is_the_defaults():
    # Only mqtt.node_id and storage.state_dir are commented out there (computed defaults).
    assert load_config(REPO / "config.yaml") == Config()


def test_shipped_config_lists_every_key():
    text = (REPO / "config.yaml").read_text()
    for section, keys in _schema_keys().items():
        assert re.search(rf"^{section}:", text, re.M), section
        for key in keys:
            assert re.search(rf"^  (# )?{key}:", text, re.M), f"{section}.{key} missing from config.yaml"


def test_shipped_config_class_example_is_valid_when_uncommented():
    text = (REPO / "config.yaml").read_text()
    pattern = re.compile(rf"^    # ({'|'.join(LABELS)}):", re.M)
    assert sorted(m.group(1) for m in pattern.finditer(text)) == LABELS
    uncommented = pattern.sub(r"    \1:", text)
    uncommented = re.sub(r"^  # (node_id|state_dir):", r"  \1:", uncommented, flags=re.M)
    cfg = parse_config(__import__("yaml").safe_load(uncommented))
    cfg.check_against_labels(LABELS)
    assert set(cfg.detection.classes) == set(LABELS)
    assert cfg.enabled_labels(LABELS) == set(LABELS) - {"air_conditioner"}
    assert cfg.mqtt.node_id == "kitchen-pi"
    assert cfg.storage.state_dir == Path("/var/lib/soundmon")


def test_configuration_reference_documents_every_key():
    text = (REPO / "docs" / "configuration.md").read_text()
    for section, keys in _schema_keys().items():
        for key in keys:
            assert f"`{section}.{key}`" in text, f"{section}.{key} missing from docs/configuration.md"
