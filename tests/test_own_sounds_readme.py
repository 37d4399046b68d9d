"""The README's "From a folder of your own recordings to a running daemon" commands, run as written.

Issue #20: step 3 appended `model: {path: ...}` to /etc/soundmon/config.yaml, which gave the
shipped config a second `model:` key; the daemon then refused the file (and a reload kept the old
model). These tests take the commands out of the README itself and run them (with /etc/ moved
into a temporary directory and a real bundle standing in for models/home), so the documented
way to point the service at a new model is the one that is tested.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO, bundled_clips

README = REPO / "README.md"
SHIPPED_CONFIG = REPO / "config.yaml"
OWN_LABELS = ["doorbell", "kettle", "smoke_alarm", "dog_bark", "cat", "car", "bike", "bird", "rain", "wind"]


def own_sounds_commands() -> list[str]:
    """The shell lines of the section's code block (comments dropped)."""
    text = README.read_text()
    section = text.split("### From a folder of your own recordings to a running daemon", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _home_bundle(tiny_bundle: Path, where: Path) -> Path:
    """`models/home` in `where`: the tiny real bundle with labels of one's own (so a result shows
    which bundle answered: the shipped one has UrbanSound8K's labels)."""
    meta = json.loads(tiny_bundle.with_suffix(".json").read_text())
    rename = dict(zip(meta["labels"], OWN_LABELS, strict=True))
    meta["labels"] = OWN_LABELS
    meta["thresholds"] = {rename[k]: v for k, v in meta.get("thresholds", {}).items()}
    home = where / "models" / "home"
    home.parent.mkdir(parents=True)
    home.with_suffix(".json").write_text(json.dumps(meta))
    shutil.copy(tiny_bundle.with_suffix(".tflite"), home.with_suffix(".tflite"))
    return home


def _soundmon(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180, env=env)  # fmt: skip


def test_no_documented_command_appends_to_the_config():
    """`echo "model: ..." >> config.yaml` adds a second `model:` to the shipped file: never again."""
    for line in own_sounds_commands():
        assert not re.search(r">>\s*\S*config\.yaml", line), line


def test_the_old_append_breaks_the_shipped_config(tmp_path, tiny_bundle):
    """Why: the shipped config already has `model:`, so the appended one is a key given twice."""
    cfg = tmp_path / "config.yaml"
    shutil.copy(SHIPPED_CONFIG, cfg)
    with cfg.open("a") as fh:
        fh.write(f"model: {{path: {tiny_bundle}}}\n")
    r = _soundmon("classify", "--config", str(cfg), str(bundled_clips()[0]), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "model" in r.stderr


def test_the_documented_steps_3_and_4_run_the_new_bundle(tmp_path, tiny_bundle):
    """Step 3 (classify with --model) and step 4 (install the bundle, the systemd drop-in naming it
    in SOUNDMON_MODEL) as written; the service's config is the shipped config.yaml, unedited."""
    _home_bundle(tiny_bundle, tmp_path)
    clip = bundled_clips()[0]
    commands = own_sounds_commands()
    classify = next(c for c in commands if c.startswith("soundmon classify"))
    r = _soundmon(*classify.split()[1:-1], "--json", str(clip), cwd=tmp_path)  # the recording: a real clip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["label"] in OWN_LABELS

    etc = tmp_path / "etc"
    shell = [c for c in commands if c.startswith(("install ", "mkdir ", "printf "))]
    assert len(shell) == 3, commands
    for line in shell:
        line = line.replace("/etc/", f"{etc}/")
        subprocess.run(["bash", "-c", line], cwd=tmp_path, check=True, timeout=30)
    installed = sorted(p.name for p in (etc / "soundmon" / "models").iterdir())
    assert installed == ["home.json", "home.tflite"]
    dropin = (etc / "systemd" / "system" / "soundmon.service.d" / "model.conf").read_text().splitlines()
    assert dropin[0] == "[Service]"
    key, _, value = dropin[1].partition("=")
    assert key == "Environment" and value.startswith("SOUNDMON_MODEL=")
    name, _, path = value.partition("=")
    assert path == f"{etc}/soundmon/models/home"
    restart = next(c for c in commands if "systemctl" in c and "restart soundmon" in c)
    assert "daemon-reload" in restart  # a new drop-in is read only after daemon-reload

    # The service runs `soundmon run --config /etc/soundmon/config.yaml` (the shipped file) with
    # the drop-in's environment: the bundle it loads is the new one.
    env = dict(os.environ, **{name: path})
    r = _soundmon("classify", "--config", str(SHIPPED_CONFIG), "--json", str(clip), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)["scores"]) == set(OWN_LABELS)
