"""Watching a few of many labels (issue #20 item 2): `detection.watch` and the bundle's "watch".

With `models/audioset` (521 AudioSet labels) a home watches a handful: only watched labels have
events, retained states, Home Assistant entities, config echoes, places in `<base>/scores` and
control commands; `soundmon classify` still shows the best labels of all 521. What a user writes:

    detection:
      watch: [smoke_detector_smoke_alarm, dog, doorbell]   # or null: the bundle's default list

The real parts: the shipped audioset bundle, the demo street recording (a siren, dog barks, gun
shots), the daemon as a child process, a real Mosquitto broker.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitor.bundle import ModelBundle, load_bundle
from monitor.config import Config, parse_config
from monitor.errors import BundleError, ConfigError
from tests.broker import Subscriber
from tests.daemon_helpers import LABELS, DaemonProcess, run_to_end, write_config
from tests.paths import DEMO, REPO, need_shipped_model

AUDIOSET = REPO / "models" / "audioset"
BASE = "soundmon/testnode"
HOME = [  # the audioset bundle's default list, in its label order (models/audioset.md says why)
    "screaming", "baby_cry_infant_cry", "dog", "car_alarm", "doorbell", "knock", "siren",
    "smoke_detector_smoke_alarm", "fire_alarm", "gunshot_gunfire", "shatter",
]  # fmt: skip
NODE_SENSORS = 8  # level, 5 stats, top sound, top score: one each per node, not per label


def audioset() -> ModelBundle:
    if not AUDIOSET.with_suffix(".tflite").is_file():
        pytest.skip("models/audioset not built in this checkout (python -m training.audioset_bundle)")
    return load_bundle(AUDIOSET)


def config(**detection: object) -> Config:
    """A Config from the `detection:` keys given (as YAML would give them)."""
    return parse_config({"detection": detection})


def refusal(cfg: Config, bundle: ModelBundle) -> str:
    """The one-line ConfigError `cfg` gets against `bundle` (the check run at start and on SIGHUP)."""
    with pytest.raises(ConfigError) as err:
        cfg.check_against_labels(bundle.labels, default_watch=bundle.watch)
    text = str(err.value)
    assert "\n" not in text
    return text


def soundmon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)  # fmt: skip


# -- which labels are watched ----------------------------------------------------------------------


def test_null_watches_the_bundles_default_list_and_all_watches_every_label():
    bundle = audioset()
    assert bundle.watch == HOME
    assert config().detection.watched_labels(bundle.labels, bundle.watch) == HOME
    assert len(config(watch="all").detection.watched_labels(bundle.labels, bundle.watch)) == 521
    # a list is kept in the model's order, each label once
    mine = config(watch=["doorbell", "dog", "doorbell"]).detection
    assert mine.watch == ["doorbell", "dog"]
    assert mine.watched_labels(bundle.labels, bundle.watch) == ["dog", "doorbell"]


def test_a_bundle_without_a_default_list_watches_every_label():
    """The YAMNet-backbone urban model has no "watch": all 10 labels, as before the key existed."""
    urban = load_bundle(REPO / "models" / "urban10_yamnet")
    assert urban.watch is None and "watch" not in urban.to_json_dict()
    assert config().detection.watched_labels(urban.labels, urban.watch) == LABELS
    assert config(watch=["siren"]).detection.watched_labels(urban.labels, urban.watch) == ["siren"]


def test_the_shipped_model_watches_its_ten_classes_not_its_background_output():
    urban10 = load_bundle(REPO / "models" / "urban10")
    assert urban10.labels == [*LABELS, "background"] and urban10.watch == LABELS
    assert config().detection.watched_labels(urban10.labels, urban10.watch) == LABELS


def test_an_unknown_label_is_one_line_that_suggests_the_label_meant():
    bundle = audioset()
    for typed, meant in (("smoke_alarm", "smoke_detector_smoke_alarm"), ("gunshot", "gunshot_gunfire"),
                         ("doorbel", "doorbell"), ("scream", "screaming"), ("glass_shatter", "shatter")):  # fmt: skip
        text = refusal(config(watch=["dog", typed]), bundle)
        assert text.startswith(f"config: detection.watch: the model has no class {typed!r} "
                               f"(did you mean {meant!r}?)"), text  # fmt: skip
        assert "521 labels" in text and len(text) < 300  # where to look, not all 521 names
    # a class name: the same suggestion, the same short list of allowed names
    text = refusal(config(classes={"smoke_alarm": {"threshold": 0.4}}), bundle)
    assert "detection.classes.smoke_alarm: the model has no class 'smoke_alarm' (did you mean " \
           "'smoke_detector_smoke_alarm'?)" in text  # fmt: skip


def test_a_configured_class_that_is_not_watched_is_an_error():
    """`detection.classes.speech` while speech is not watched would do nothing: refused, naming
    the fix and the labels that are watched."""
    bundle = audioset()
    text = refusal(config(classes={"speech": {"threshold": 0.7}}), bundle)
    assert text == (
        "config: detection.classes.speech: 'speech' is not watched, so this has no effect; add it to "
        "detection.watch or remove detection.classes.speech (watched by the model's default list "
        f"(detection.watch: null): {', '.join(HOME)})"
    )
    text = refusal(config(watch=["dog"], classes={"siren": {"enabled": False}}), bundle)
    assert "'siren' is not watched" in text and "(watched by detection.watch: dog)" in text
    # watched, or every label watched: fine
    config(watch=["dog", "speech"], classes={"speech": {"threshold": 0.7}}).check_against_labels(bundle.labels)
    config(watch="all", classes={"speech": {}}).check_against_labels(bundle.labels, default_watch=bundle.watch)


@pytest.mark.parametrize(("value", "message"), [
    ("dog", "detection.watch: 'dog' is not allowed; allowed: a list of labels (one label is a list too: [dog])"),
    ([], "detection.watch: an empty list watches nothing; allowed: a list of labels, 'all', or null"),
    (5, "detection.watch: expected a list of labels, one of all or null (null = the model's default list"),
    ([["dog"]], "detection.watch: expected a list of labels"),
])  # fmt: skip
def test_a_watch_value_that_is_not_a_list_of_labels_is_refused(value, message):
    with pytest.raises(ConfigError) as err:
        config(watch=value)
    assert str(err.value).startswith(f"config: {message}"), str(err.value)


def test_the_cli_refuses_a_typo_with_exit_status_2_before_anything_runs_naming_the_file(tmp_path):
    audioset()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mqtt: {enabled: false}\ndetection:\n  watch: [dog, doorbel]\n")
    for command in (["run", "--source", str(DEMO)], ["classify", str(DEMO)]):
        out = soundmon(*command, "--model", str(AUDIOSET), "--config", str(cfg))
        assert out.returncode == 2
        assert out.stderr.strip().splitlines() == [
            f"soundmon {command[0]}: config {cfg}: detection.watch: the model has no class 'doorbel' (did you mean "
            "'doorbell'?); allowed: one of the model's 521 labels (its JSON's \"labels\"; `soundmon classify "
            "--model <bundle> <recording>` shows the best ones for a recording)"
        ]


# -- the bundle's default list ---------------------------------------------------------------------


def test_the_bundles_list_round_trips_and_bad_ones_are_refused(tmp_path):
    bundle = audioset()
    data = json.loads(AUDIOSET.with_suffix(".json").read_text())
    assert bundle.to_json_dict()["watch"] == data["watch"] == HOME
    base = tmp_path / "copy"
    base.with_suffix(".tflite").write_bytes(b"not read by load_bundle")
    for bad, message in ((["dog", "not_a_label"], "'watch' names labels it does not have: ['not_a_label']"),
                         ([], "'watch' must be a non-empty list of labels"),
                         ("dog", "'watch' must be a non-empty list of labels"),
                         (["dog", "dog"], "'watch' names a label twice")):  # fmt: skip
        base.with_suffix(".json").write_text(json.dumps({**data, "watch": bad}))
        with pytest.raises(BundleError) as err:
            load_bundle(base)
        assert message in str(err.value) and "\n" not in str(err.value)


def test_the_generator_writes_the_shipped_list_and_the_card_says_why():
    """`python -m training.audioset_bundle` writes HOME_WATCH (in label order) as the JSON's
    "watch", so the documented command reproduces the shipped list; the card explains each."""
    from training.audioset_bundle import HOME_WATCH, home_watch

    bundle = audioset()
    assert home_watch(bundle.labels) == bundle.watch
    assert set(HOME_WATCH) == set(bundle.watch) and all(HOME_WATCH.values())
    card = AUDIOSET.with_suffix(".md").read_text()
    section = card.split("## Watched by default", 1)[1].split("\n## ", 1)[0]
    for label in HOME_WATCH:
        assert f"| `{label}` | {bundle.display_name(label)} | {HOME_WATCH[label]} |" in section


# -- what is published -----------------------------------------------------------------------------


def test_classify_scores_every_label_and_reports_events_of_watched_labels_only():
    """The table ranks labels of any class (the demo's best are `silence` and `animal`, not
    watched); the JSON scores all 521; the events are the daemon's, so only watched labels."""
    audioset()
    table = soundmon("classify", "--model", str(AUDIOSET), str(DEMO))
    assert table.returncode == 0, table.stderr
    ranked = [line.split()[0] for line in table.stdout.splitlines()[1:6]]
    assert set(ranked) - set(HOME)  # e.g. silence, animal
    out = soundmon("classify", "--json", "--model", str(AUDIOSET), str(DEMO))
    obj = json.loads(out.stdout)
    assert len(obj["scores"]) == 521
    assert {ev["label"] for ev in obj["events"]} == {"siren", "dog", "gunshot_gunfire"}


def retained_configs(sub: Subscriber) -> dict[str, dict[str, bytes]]:
    """component -> {label (or node sensor): the last retained discovery payload} seen by `sub`
    (`homeassistant/number/testnode/dog_threshold/config` is the number of `dog`)."""
    out: dict[str, dict[str, bytes]] = {}
    for m in sub.get():
        parts = m.topic.split("/")
        if parts[0] == "homeassistant" and parts[-1] == "config":
            name = parts[3].removesuffix("_threshold").removesuffix("_detection")
            out.setdefault(parts[1], {})[name] = m.payload
    return out


def announced(sub: Subscriber) -> dict[str, set[str]]:
    """component -> labels (or node sensors) whose last discovery payload is a config (not a removal)."""
    return {c: {k for k, p in ids.items() if p} for c, ids in retained_configs(sub).items()}


def test_the_daemon_announces_and_reports_only_the_default_watched_labels(broker, tmp_path):
    """`soundmon run --model models/audioset` with no watch list: 11 labels x (binary sensor,
    threshold number, detection switch) + 8 node sensors = 41 Home Assistant entities, not
    ~1,570; states, echoes, scores and events of those 11 only; the demo's siren, dog barks and
    a gun shot are reported."""
    audioset()
    cfg = write_config(tmp_path / "c.yaml", broker)
    with Subscriber(broker, ["homeassistant/#", f"{BASE}/#"]) as sub:
        d = run_to_end("--source", str(DEMO), "--pace", "fast", "--model", str(AUDIOSET), "--config", str(cfg))
        assert d.proc.returncode == 0, d.text()
        sub.wait_for(f"{BASE}/status", lambda m: m.text == "offline")
    assert "watching 11 of 521 labels: screaming, baby_cry_infant_cry, dog" in d.text()
    # the runtime is not read as one more label at the list's end
    assert re.search(r"labels: [^()]*, shatter; runtime \w+\)", d.text()), d.text()
    entities = announced(sub)
    assert {c: len(ids) for c, ids in entities.items()} == {
        "binary_sensor": 11, "number": 11, "switch": 11, "sensor": NODE_SENSORS,
    }  # fmt: skip
    assert sum(map(len, entities.values())) == 41
    assert entities["binary_sensor"] == set(HOME)
    topics = sub.topics_seen()
    assert {t.split("/")[-1] for t in topics if t.startswith(f"{BASE}/state/")} == set(HOME)
    assert {t.split("/")[-2] for t in topics if t.startswith(f"{BASE}/config/")} == set(HOME)
    events = [m.json() for m in sub.get(f"{BASE}/detection")]
    assert {e["label"] for e in events} == {"siren", "dog", "gunshot_gunfire"}
    scores = [m.json() for m in sub.get(f"{BASE}/scores")]
    assert scores and all({x["label"] for x in s["top"]} <= set(HOME) for s in scores)


def test_a_watch_list_in_the_config_decides_what_is_announced(broker, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", broker, detection={"watch": ["dog", "doorbell"]})
    audioset()
    with Subscriber(broker, ["homeassistant/#", f"{BASE}/#"]) as sub:
        d = run_to_end("--source", str(DEMO), "--pace", "fast", "--model", str(AUDIOSET), "--config", str(cfg))
        assert d.proc.returncode == 0, d.text()
        sub.wait_for(f"{BASE}/status", lambda m: m.text == "offline")
    entities = announced(sub)
    assert entities["binary_sensor"] == entities["number"] == entities["switch"] == {"dog", "doorbell"}
    assert len(entities["sensor"]) == NODE_SENSORS
    assert {m.json()["label"] for m in sub.get(f"{BASE}/detection")} == {"dog"}
    assert {t.split("/")[-1] for t in sub.topics_seen() if t.startswith(f"{BASE}/state/")} == {"dog", "doorbell"}


def test_sighup_with_another_watch_list_ends_removes_and_adds(broker, tmp_path):
    """While the demo's siren sounds: a command for an unwatched label is refused, then a SIGHUP
    that watches [dog, doorbell] instead of the default list ends the open siren event (END,
    state OFF), clears the retained state and echoes of every label no longer watched, removes
    their Home Assistant entities and announces doorbell's; the dog barks later are reported."""
    audioset()
    cfg = write_config(tmp_path / "c.yaml", broker)
    with Subscriber(broker, ["homeassistant/#", f"{BASE}/#"]) as sub:
        d = DaemonProcess("--source", str(DEMO), "--pace", "realtime", "--model", str(AUDIOSET),
                          "--config", str(cfg))  # fmt: skip
        try:
            start = sub.wait_for(f"{BASE}/detection", lambda m: m.json()["label"] == "siren", timeout=20).json()
            sub.client.publish(f"{BASE}/set/speech/threshold", "0.3", qos=1).wait_for_publish(5)
            assert "the model has no watched label 'speech'" in d.wait_log("control: ignored")
            write_config(cfg, broker, detection={"watch": ["dog", "doorbell"]})
            d.signal(signal.SIGHUP)
            d.wait_log("reload: configuration applied")
            assert "reload: watching 2 of 521 labels: dog, doorbell" in d.text()
            end = sub.wait_for(f"{BASE}/detection", lambda m: m.json()["type"] == "end", timeout=5).json()
            assert (end["id"], end["label"]) == (start["id"], "siren")
            sub.wait_for(f"{BASE}/state/siren", lambda m: m.payload == b"", timeout=5)
            state = [m.payload for m in sub.get(f"{BASE}/state/siren")]
            assert state[-2:] == [b"OFF", b""]  # ended, then forgotten by the broker
            sub.wait_for(f"{BASE}/detection", lambda m: m.json()["label"] == "dog", timeout=25)
            d.signal(signal.SIGTERM)
            assert d.wait(10) == 0
        finally:
            d.kill()
    entities = announced(sub)
    assert entities["binary_sensor"] == entities["number"] == entities["switch"] == {"dog", "doorbell"}
    gone = set(HOME) - {"dog", "doorbell"}
    assert all(retained_configs(sub)["binary_sensor"][label] == b"" for label in gone)
    for label in gone:
        assert sub.get(f"{BASE}/state/{label}")[-1].payload == b""
        assert sub.get(f"{BASE}/config/{label}/threshold")[-1].payload == b""
    assert sub.get(f"{BASE}/state/doorbell")[-1].text == "OFF"
    assert not sub.get(f"{BASE}/config/speech/threshold")
    labels = {m.json()["label"] for m in sub.get(f"{BASE}/detection")}
    assert labels <= {"siren", "dog"}  # gun shots (27 s on) come after the reload: not watched


def retained(broker) -> dict[str, bytes]:
    """What a client connecting now gets: every retained message on the broker, by topic."""
    with Subscriber(broker, "#") as sub:
        sub.wait_for(f"{BASE}/status")  # retained messages follow the subscription's ack
        sub.wait_quiet(0.5)
        return {m.topic: m.payload for m in sub.get() if m.retain}


def run_demo(cfg: Path, model: Path) -> DaemonProcess:
    d = run_to_end("--source", str(DEMO), "--pace", "fast", "--model", str(model), "--config", str(cfg))
    assert d.proc.returncode == 0, d.text()
    return d


def test_a_restart_with_a_shorter_list_removes_what_the_last_run_published(broker, tmp_path):
    """Watch [dog, doorbell], stop, watch [dog], start: the daemon remembers what it published
    (`<state_dir>/announced.json`), so doorbell's entities, retained state and echoes are gone
    from the broker after the second start, as after a reload."""
    audioset()
    cfg = write_config(tmp_path / "c.yaml", broker, detection={"watch": ["dog", "doorbell"]})
    run_demo(cfg, AUDIOSET)
    assert any("/doorbell" in t for t in retained(broker))
    write_config(cfg, broker, detection={"watch": ["dog"]})
    d = run_demo(cfg, AUDIOSET)
    assert "no longer watched since the last run: doorbell" in d.text()
    left = retained(broker)
    assert not [t for t in left if "doorbell" in t], left
    assert left["homeassistant/binary_sensor/testnode/dog/config"] and left[f"{BASE}/state/dog"] == b"OFF"
    announced = json.loads((tmp_path / "state" / "announced.json").read_text())
    assert announced == {"node_id": "testnode", "base": BASE, "discovery_prefix": "homeassistant", "labels": ["dog"]}


def test_switching_models_across_a_restart_removes_the_old_models_entities(broker, tmp_path):
    """urban10 (10 labels) then, after a restart, audioset with its default list: what a client
    sees on the broker is the 11 watched labels only, not urban10's as well."""
    audioset()
    urban10 = need_shipped_model()
    cfg = write_config(tmp_path / "c.yaml", broker)
    run_demo(cfg, urban10)
    run_demo(cfg, AUDIOSET)
    left = retained(broker)
    sensors = {t.split("/")[3] for t in left if t.startswith("homeassistant/binary_sensor/")}
    states = {t.split("/")[-1] for t in left if t.startswith(f"{BASE}/state/")}
    assert sensors == states == set(HOME)


def test_sighup_with_a_typo_in_the_watch_list_keeps_the_running_one(broker, tmp_path):
    audioset()
    cfg = write_config(tmp_path / "c.yaml", broker, detection={"watch": ["dog"]})
    d = DaemonProcess("--source", str(DEMO), "--pace", "realtime", "--model", str(AUDIOSET), "--config", str(cfg))
    try:
        d.wait_log("MQTT: connected", timeout=20)
        write_config(cfg, broker, detection={"watch": ["dog", "sirne"]})
        d.signal(signal.SIGHUP)
        line = d.wait_log("reload refused")
        assert f"config {cfg}: detection.watch: the model has no class 'sirne' (did you mean 'siren'?)" in line
        d.signal(signal.SIGTERM)
        assert d.wait(10) == 0
    finally:
        d.kill()


def test_the_shipped_config_example_watch_list_is_valid_for_audioset():
    """config.yaml's commented `watch:` example, uncommented, passes the check against audioset."""
    bundle = audioset()
    text = (REPO / "config.yaml").read_text()
    example = [line for line in text.splitlines() if line.startswith("  # watch: [")]
    assert len(example) == 1
    watch = yaml.safe_load(example[0].replace("# ", "", 1).strip())["watch"]
    config(watch=watch).check_against_labels(bundle.labels, default_watch=bundle.watch)


def test_the_readme_example_is_valid_for_audioset():
    """README "Choosing what to watch": its YAML passes the checks the daemon runs at start."""
    bundle = audioset()
    readme = (REPO / "README.md").read_text()
    section = readme.split("**Choosing what to watch.**", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    cfg = parse_config(yaml.safe_load(block))
    cfg.check_against_labels(bundle.labels, default_watch=bundle.watch)
    assert cfg.model.path == AUDIOSET.relative_to(REPO)
    assert set(cfg.detection.watched_labels(bundle.labels, bundle.watch)) == set(cfg.detection.watch)
    assert set(cfg.detection.classes) <= set(cfg.detection.watch)
