"""config.yaml's comments and docs/configuration.md are generated from monitor/config.py.

The pydantic models (each `Field`'s description, type, constraints, default and examples; each
section's docstring) are the one source of the configuration's documentation;
`tools/config_docs.py` (`make docs`) writes both files from them. These tests regenerate both in
memory and fail, naming the command, when a committed file differs; and pin what the shipped
config.yaml sets, so a generator change cannot quietly change the shipped configuration.
"""

from __future__ import annotations

import difflib
import json
import logging
import re

import pytest
import yaml

from monitor.config import Config, load_config, parse_config
from tests.paths import REPO
from tools import config_docs

# What config.yaml sets uncommented (every other key is a comment there): the values it set
# before it was generated. mqtt.node_id and storage.state_dir (computed at start),
# detection.fast_start_threshold, hop_seconds, smoothing_windows and start_model_weight (their
# defaults depend on the bundle) and the deprecated detection.window_seconds are left unset.
SHIPPED_SETTINGS = {
    "audio": {"device": None, "sample_rate": None, "channels": 1, "block_seconds": 0.05,
              "ring_seconds": 10.0, "stall_seconds": 3.0, "silence_seconds": 10.0,
              "reopen_backoff_max": 30.0},
    "model": {"path": None, "threads": 1},
    "detection": {"default_threshold": 0.5,
                  "release_ratio": 0.8, "hold_seconds": 1.0, "cooldown_seconds": 2.0,
                  "min_level_dbfs": -70.0, "warm_start": True, "level_interval": 5.0,
                  "scores_interval": 1.0, "watch": None, "classes": {}},
    "mqtt": {"enabled": True, "host": "localhost", "port": 1883, "base_topic": None, "client_id": None,
             "username": None, "password_file": None, "password_env": None, "tls": False,
             "ca_file": None, "cert_file": None, "key_file": None, "tls_insecure": False,
             "keepalive": 30, "reconnect_max_seconds": 60.0, "discovery": True,
             "discovery_prefix": "homeassistant", "stats_interval": 60.0, "control": True,
             "flush_rate": 100.0, "max_inflight": 20},
    "storage": {"spool_max_messages": 10000, "clips_enabled": False, "clip_pre_seconds": 2.0,
                "clip_post_seconds": 1.0, "clips_max_mb": 200.0},
    "logging": {"level": "INFO"},
}  # fmt: skip


@pytest.mark.parametrize("path", [config_docs.CONFIG_YAML, config_docs.REFERENCE], ids=lambda p: p.name)
def test_generated_file_is_current(path):
    expected = config_docs.generated()[path]
    committed = path.read_text(encoding="utf-8")
    if committed != expected:
        diff = "".join(list(difflib.unified_diff(
            committed.splitlines(True), expected.splitlines(True), "committed", "generated", n=1))[:40])
        pytest.fail(f"{path.relative_to(REPO)} is not what monitor/config.py generates; run: "
                    f"{config_docs.COMMAND}\n{diff}")  # fmt: skip


def test_the_check_command_names_the_fix(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text("# hand-edited\n")
    monkeypatch.setattr(config_docs, "REFERENCE", stale)
    monkeypatch.setattr(config_docs, "CONFIG_YAML", tmp_path / "config.yaml")  # not the real one
    (tmp_path / "config.yaml").write_text(config_docs.render_config_yaml())
    assert config_docs.main([]) == 1
    assert "make docs" in capsys.readouterr().out
    assert config_docs.main(["--write"]) == 0
    assert config_docs.main([]) == 0
    assert stale.read_text() == config_docs.render_reference()


def test_shipped_config_sets_the_same_values_as_before():
    cfg = load_config(REPO / "config.yaml")
    assert cfg == Config()
    for section, values in SHIPPED_SETTINGS.items():
        part = getattr(cfg, section)
        assert part.model_fields_set == set(values), section
        assert {k: getattr(part, k) for k in values} == values, section


@pytest.mark.parametrize("model", ["urban10", "urban10_yamnet", "audioset"])
def test_a_copy_of_the_shipped_config_detects_as_the_bundle_is_calibrated(model):
    """/etc/soundmon/config.yaml is a copy of config.yaml: it must leave every shipped bundle the
    detector an empty file gives it (the bundle's hop, its steady sounds' 7 windows, its start
    model's weight), not the generic values written out."""
    from monitor.bundle import load_bundle
    from monitor.pipeline import _detector_settings

    bundle = load_bundle(REPO / "models" / model)
    shipped, empty = load_config(REPO / "config.yaml"), Config()
    for cfg in (shipped, empty):
        cfg.detection.apply_bundle_defaults(bundle.detection_defaults)
    assert shipped.detection.hop_seconds == empty.detection.hop_seconds
    assert (_detector_settings(shipped.detection, bundle.labels, bundle)
            == _detector_settings(empty.detection, bundle.labels, bundle))  # fmt: skip


def test_every_key_and_section_is_described():
    for name, field in Config.model_fields.items():
        heading, _ = config_docs.doc_parts(field.annotation)
        assert heading, f"{name}: the section class needs a docstring"
        for key, sub in field.annotation.model_fields.items():
            assert sub.description and len(sub.description) > 20, f"{name}.{key}"
            assert not sub.title, f"{name}.{key}: a description, no title"


def test_the_comments_are_the_descriptions():
    """Each key's comment in config.yaml is its description, word for word."""
    text = config_docs.CONFIG_YAML.read_text()
    comments = " ".join(line.strip().lstrip("#").strip() for line in text.splitlines())
    for name, field in Config.model_fields.items():
        for key, sub in field.annotation.model_fields.items():
            assert " ".join(sub.description.split()) in comments, f"{name}.{key}"


def test_every_commented_key_loads_when_uncommented():
    """The keys config.yaml leaves as comments hold valid values (their example or default)."""
    lines = config_docs.CONFIG_YAML.read_text().splitlines()
    keys = ("window_seconds", "fast_start_threshold", "hop_seconds", "smoothing_windows", "start_model_weight",
            "node_id", "state_dir")  # fmt: skip
    uncommented = [line.replace("# ", "", 1) if line.lstrip().startswith(tuple(f"# {k}:" for k in keys))
                   else line for line in lines]  # fmt: skip
    cfg = parse_config(yaml.safe_load("\n".join(uncommented)))
    assert cfg.detection.fast_start_threshold == 0.9 and cfg.mqtt.node_id == "kitchen-pi"


def test_window_seconds_is_accepted_but_warns(caplog):
    """detection.window_seconds was never read (the window is the bundle's): older files still
    load, and a value says in one line that it has no effect."""
    with caplog.at_level(logging.WARNING, logger="soundmon.config"):
        assert parse_config({"detection": {"window_seconds": None}}) == Config()
        assert not caplog.records
        cfg = parse_config({"detection": {"window_seconds": 4.0}}, source="config x.yaml")
    assert cfg.model_dump(exclude={"detection": {"window_seconds"}}) == Config().model_dump(
        exclude={"detection": {"window_seconds"}})
    [record] = caplog.records
    assert record.getMessage().startswith("config x.yaml: detection.window_seconds is deprecated and has no effect")


def test_tools_is_not_installed():
    """The generator lives in tools/, which the wheel does not carry (explicit package list)."""
    text = (REPO / "pyproject.toml").read_text()
    packages = re.search(r"^\[tool\.setuptools\]\n(?:#.*\n)*packages = \[(.*)\]$", text, re.M)
    assert packages, "pyproject.toml: [tool.setuptools] packages must stay an explicit list"
    assert "tools" not in re.findall(r'"([^"]+)"', packages.group(1))
    assert "[tool.setuptools.packages.find]" not in text


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_configuration_section_example_and_links():
    """README "Configuration": its YAML passes the checks the daemon runs with the shipped model,
    and its links into docs/configuration.md name headings that exist there."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    cfg = parse_config(yaml.safe_load(block))
    meta = json.loads(config_docs.SHIPPED_BUNDLE_JSON.read_text())
    cfg.check_against_labels(meta["labels"], default_watch=meta.get("watch"))
    reference = config_docs.REFERENCE.read_text()
    anchors = {_slug(line.lstrip("#")) for line in reference.splitlines() if line.startswith("#")}
    links = re.findall(r"docs/configuration\.md#([\w-]+)", section)
    assert links and set(links) <= anchors, set(links) - anchors
