"""The README's worked examples are what the shipped model prints for the demo recording.

A retrained model or a detector change moves these figures; these tests make the README move
with them (it once said 27.7 s for a gun shot the model answered at 28.2 s).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.paths import DEMO, REPO, need_shipped_model

README = (REPO / "README.md").read_text(encoding="utf-8")


def soundmon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)  # fmt: skip


def test_the_classify_json_example_is_the_demos():
    need_shipped_model()
    example = re.search(r'^(\{"file": "demo/street_demo\.flac".*\})$', README, re.M)
    assert example, "README: the `soundmon classify --json` example of the demo recording"
    out = soundmon("classify", "--json", str(DEMO.relative_to(REPO)))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == json.loads(example.group(1))


def test_the_quick_start_names_the_demos_detections(tmp_path):
    need_shipped_model()
    said = re.search(r"prints each detection \(siren at ([\d.]+) s,\s+dog bark at ([\d.]+) s as it begins, "
                     r"gun shot at ([\d.]+) s", README)  # fmt: skip
    assert said, "README quick start: the demo's detections"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"mqtt: {{enabled: false}}\nstorage: {{state_dir: {tmp_path / 'state'}}}\n")
    out = soundmon("run", "--source", str(DEMO), "--pace", "fast", "--print", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    starts = re.findall(r"^\s*([\d.]+) s\s+START (\w+)", out.stdout, re.M)
    assert [label for _, label in starts] == ["siren", "dog_bark", "gun_shot"], out.stdout
    assert [float(t) for t, _ in starts] == pytest.approx([float(x) for x in said.groups()], abs=0.05)
