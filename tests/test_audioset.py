"""models/audioset: YAMNet's 521 AudioSet classes as a bundle the daemon runs (training/audioset_bundle.py).

The shipped bundle is checked as the daemon sees it (loads, labels are slugs with display names,
classify and run on the demo recording give the demo's sounds); the labels against the class map
in ../shared/models when it is there; the weight-only int8 conversion on a small real model.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from monitor.bundle import load_bundle
from monitor.config import Config
from monitor.errors import BundleError
from monitor.frontend import YAMNET_FRONTEND
from tests.paths import DEMO, REPO, SHIPPED_MODEL, bundled_clips
from training.audioset_bundle import label_slugs, read_class_map, slugify

AUDIOSET = REPO / "models" / "audioset"
CLASS_MAP = REPO.parent / "shared" / "models" / "yamnet_class_map.csv"
SLUG = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")


def need_audioset():
    if not AUDIOSET.with_suffix(".tflite").is_file():
        pytest.skip("models/audioset not built in this checkout (python -m training.audioset_bundle)")
    return load_bundle(AUDIOSET)


def soundmon(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)  # fmt: skip


# -- labels ----------------------------------------------------------------------------------------


def test_slugs_of_display_names():
    assert slugify("Smoke detector, smoke alarm") == "smoke_detector_smoke_alarm"
    assert slugify("Fire engine, fire truck (siren)") == "fire_engine_fire_truck_siren"
    assert slugify("  Tick-tock ") == "tick_tock"
    assert slugify("Dog") == "dog"


def test_colliding_slugs_are_disambiguated_deterministically():
    # The first holder keeps the slug; later ones get the first free _2, _3 (never one a label has).
    assert label_slugs(["A b", "a-b", "a_b_2", "A.B"]) == ["a_b", "a_b_3", "a_b_2", "a_b_4"]
    with pytest.raises(ValueError, match="without a letter or digit"):
        label_slugs(["Dog", "(?)"])


def test_the_521_class_names_have_unique_slugs():
    if not CLASS_MAP.is_file():
        pytest.skip("needs ../shared/models/yamnet_class_map.csv, not beside this checkout")
    names = read_class_map(CLASS_MAP)
    assert len(names) == 521
    assert label_slugs(names) == [slugify(n) for n in names]  # no collision among YAMNet's names
    assert len(set(label_slugs(names))) == 521


# -- the shipped bundle ----------------------------------------------------------------------------


def test_shipped_bundle_loads_with_slugs_and_display_names():
    bundle = need_audioset()
    assert len(bundle.labels) == 521 and len(set(bundle.labels)) == 521
    assert all(SLUG.match(label) for label in bundle.labels)
    assert bundle.output_activation == "sigmoid"
    assert bundle.frontend == YAMNET_FRONTEND
    assert (bundle.window_seconds, bundle.window_frames) == (0.975, 96)
    assert set(bundle.display_names) == set(bundle.labels)
    assert all(slugify(name) == label for label, name in bundle.display_names.items())
    assert bundle.display_name("smoke_detector_smoke_alarm") == "Smoke detector, smoke alarm"
    assert bundle.display_names["speech"] == "Speech"
    assert set(bundle.thresholds) == set(bundle.labels) and all(0 < t < 1 for t in bundle.thresholds.values())
    # Package data the wheel ships: keep it small.
    assert bundle.tflite_path.stat().st_size < 4.5e6
    if CLASS_MAP.is_file():  # in output order
        assert [bundle.display_names[x] for x in bundle.labels] == read_class_map(CLASS_MAP)


def test_shipped_bundle_records_the_precision_rule():
    """The JSON says which precision shipped and why: its top-1 agreement with the reference (the
    YAMNet export, default interpreter) is within 1 point of the float rebuild's."""
    bundle = need_audioset()
    ev = bundle.meta["evaluation"]
    shipped = bundle.meta["precision"]
    rebuild = ev["float_rebuild_vs_reference"]["top1_agreement_pct"]
    assert ev["candidates"][shipped]["vs_reference"]["top1_agreement_pct"] >= rebuild - 1.0
    if shipped != "int8":  # full-integer int8 was measured and missed the rule
        assert ev["candidates"]["int8"]["vs_reference"]["top1_agreement_pct"] < rebuild - 1.0
    assert sum(ev["clips"].values()) >= 300
    assert ev["float_rebuild_vs_reference"]["windows"] >= 1000


def test_shipped_bundle_declares_one_window_per_hop_without_smoothing():
    """Its own detection defaults (its JSON's "detection"): one 0.975 s window per hop, no smoothing,
    the settings its thresholds are calibrated with and the CPU budget is met at (the card's 'Cost')."""
    bundle = need_audioset()
    assert bundle.detection_defaults == {"hop_seconds": bundle.window_seconds, "smoothing_windows": 1}
    assert bundle.meta["threshold_calibration"]["hop_seconds"] == bundle.window_seconds


def test_old_bundles_have_no_display_names():
    if not SHIPPED_MODEL.with_suffix(".tflite").is_file():
        pytest.skip("needs the shipped model models/urban10")
    bundle = load_bundle(SHIPPED_MODEL)
    assert bundle.display_names is None
    assert bundle.display_name("siren") == "siren"
    assert "display_names" not in bundle.to_json_dict()


def test_display_names_round_trip_and_bad_ones_are_refused(tmp_path):
    bundle = need_audioset()
    data = json.loads(AUDIOSET.with_suffix(".json").read_text())
    assert bundle.to_json_dict()["display_names"] == data["display_names"]
    base = tmp_path / "copy"
    base.with_suffix(".tflite").write_bytes(b"not read by load_bundle")
    for bad, message in (({"not_a_label": "X"}, "does not have: ['not_a_label']"),
                         ({"speech": ""}, "must map labels to non-empty names"),
                         (["Speech"], "must map labels to non-empty names")):  # fmt: skip
        base.with_suffix(".json").write_text(json.dumps({**data, "display_names": bad}))
        with pytest.raises(BundleError) as err:
            load_bundle(base)
        assert message in str(err.value) and "\n" not in str(err.value)


# -- the daemon runs it ----------------------------------------------------------------------------


def test_window_ends_use_the_frame_span():
    """A YAMNet window of 96 frames spans 0.975 s (frames of 400 samples, not n_fft = 512): the
    pipeline's window end offsets are 0.975 s, then one hop (0.5 s) more each."""
    from monitor.pipeline import Pipeline
    from monitor.runner import open_model

    need_audioset()
    bundle, runner = open_model(AUDIOSET)
    cfg = Config()
    cfg.detection.min_level_dbfs = -200.0
    audio, sr = sf.read(bundled_clips()[0], dtype="float32")
    assert sr == 16000
    pipe = Pipeline(bundle, runner, cfg.detection, warm_start=False)
    results = [r for start in range(0, len(audio), 800) for r in pipe.process(audio[start : start + 800])]
    ends = [r.end_offset_s for r in results]
    assert ends[0] == pytest.approx(0.975)
    assert np.allclose(np.diff(ends), 0.5)
    assert all(r.scores.shape == (521,) and r.scores.min() >= 0 and r.scores.max() <= 1 for r in results)


def _demo_labels() -> list[dict]:
    with open(DEMO.with_name("street_demo_labels.csv"), newline="") as f:
        return list(csv.DictReader(f))


# The demo's labelled sounds (demo/ATTRIBUTION.md) and AudioSet labels that name them.
DEMO_SOUNDS = {
    "siren": {"siren", "civil_defense_siren", "police_car_siren", "ambulance_siren",
              "fire_engine_fire_truck_siren", "emergency_vehicle"},
    "dog_bark": {"dog", "bark", "bow_wow", "yip", "domestic_animals_pets"},
    "gun_shot": {"gunshot_gunfire", "machine_gun", "cap_gun", "fusillade", "artillery_fire"},
}  # fmt: skip


def _found(events: list[dict]) -> dict[str, list[dict]]:
    """Per demo sound, the events of its AudioSet labels that overlap one of its labelled spans."""
    spans = _demo_labels()
    out = {}
    for sound, names in DEMO_SOUNDS.items():
        mine = [(float(r["start"]), float(r["end"])) for r in spans if r["class"] == sound]
        out[sound] = [
            ev for ev in events if ev["label"] in names
            and any(ev["start_s"] - 1.0 <= e and (ev["end_s"] or ev["start_s"]) >= s - 1.0 for s, e in mine)
        ]  # fmt: skip
    return out


def test_classify_the_demo_recording():
    """`soundmon classify --model models/audioset demo/street_demo.flac`: the table shows 5 labels
    (of 521) and the events; the JSON keeps every score. The demo's siren, dog barks and gun shots
    are found where they are."""
    need_audioset()
    table = soundmon("classify", "--model", str(AUDIOSET), str(DEMO))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    ranked = lines[1 : lines.index("  events:")]
    assert len(ranked) == 5
    out = soundmon("classify", "--json", "--model", str(AUDIOSET), str(DEMO))
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)
    assert len(obj["scores"]) == 521
    assert obj["label"] == max(obj["scores"], key=obj["scores"].get)
    found = _found(obj["events"])
    assert all(found.values()), found


@pytest.mark.integration  # runs the daemon (soundmon run)
def test_run_the_demo_recording_without_mqtt(tmp_path):
    """`soundmon run --source demo/street_demo.flac --model models/audioset --pace fast --print`
    with MQTT off: exits 0 and prints the demo's sounds as events."""
    need_audioset()
    config = tmp_path / "config.yaml"
    config.write_text(f"mqtt:\n  enabled: false\nstorage:\n  state_dir: {tmp_path / 'state'}\n")
    out = soundmon("run", "--source", str(DEMO), "--model", str(AUDIOSET), "--pace", "fast", "--print",
                   "--config", str(config))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "hop 0.97 s" in out.stderr or "hop 0.98 s" in out.stderr  # the bundle's own hop (its "detection")
    printed = out.stdout
    for sound, names in DEMO_SOUNDS.items():
        assert any(re.search(rf"\b{name}\b", printed) for name in names), (sound, printed[-2000:])


# -- conversion ------------------------------------------------------------------------------------


@pytest.mark.integration  # builds a Keras model (TensorFlow)
def test_weight_only_int8_stores_int8_kernels_and_computes_in_float(tmp_path):
    """training.audioset_bundle.weight_only_int8 on a small real network: kernels become int8 (file
    ~4x smaller), the arithmetic stays float; with the kernels' own scales (weights that are int8
    codes times a scale, as YAMNet's are) the scores equal the float model's."""
    tf = pytest.importorskip("tensorflow", reason="tensorflow is in the 'train' extra")
    from training.audioset_bundle import float_tflite, tflite_scores, weight_only_int8
    from training.yamnet import logmel_patches

    rng = np.random.default_rng(0)
    inputs = tf.keras.Input((96, 64))
    x = tf.keras.layers.Reshape((96, 64, 1))(inputs)
    x = tf.keras.layers.Conv2D(32, 3, strides=4, padding="same", activation="relu")(x)
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = tf.keras.layers.Conv2D(256, 1, activation="relu")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(128, activation="sigmoid")(x))
    scales = []
    for layer in model.layers:  # make every kernel int8 codes x a per-output-channel scale
        if layer.weights:
            kernel, bias = layer.get_weights()
            axis = 2 if isinstance(layer, tf.keras.layers.DepthwiseConv2D) else -1
            scale = rng.uniform(0.001, 0.01, kernel.shape[axis]).astype(np.float32)
            shape = [1] * kernel.ndim
            shape[axis] = -1
            codes = rng.integers(-127, 128, kernel.shape)
            layer.set_weights([(codes * scale.reshape(shape)).astype(np.float32), bias])
            scales.append(scale)
    patches = np.concatenate([logmel_patches(sf.read(p, dtype="float32")[0]) for p in bundled_clips()[:3]])
    f32 = float_tflite(model)
    exact = weight_only_int8(f32, scales)
    plain = weight_only_int8(f32)
    assert len(exact) < 0.4 * len(f32) and len(plain) < 0.4 * len(f32)
    want = model.predict(patches, verbose=0)
    np.testing.assert_allclose(tflite_scores(exact, patches), want, atol=1e-5)
    assert np.max(np.abs(tflite_scores(plain, patches) - want)) < 0.05


# -- thresholds and the card -----------------------------------------------------------------------


def test_smoothed_peak_is_the_detectors_smoothing():
    """smoothed_clip_max: the highest mean of the last 3 window scores (fewer at a clip's start),
    what monitor.detector compares with a threshold: a one-window spike of 0.9 is 0.9 at the clip's
    first window, 0.3 later on."""
    from training.audioset_bundle import smoothed_clip_max

    scores = np.array([[0.9, 0.0], [0.0, 0.0], [0.0, 0.9], [0.3, 0.0], [0.3, 0.0], [0.3, 0.0]], np.float32)
    owner = np.array([0, 0, 0, 1, 1, 1])
    peak = smoothed_clip_max(scores, owner, 2, n=3)
    np.testing.assert_allclose(peak, [[0.9, 0.3], [0.3, 0.0]], atol=1e-6)
    # the bundle's own smoothing (one window, its `"detection"` default): the window's own score
    np.testing.assert_allclose(smoothed_clip_max(scores, owner, 2), [[0.9, 0.9], [0.3, 0.0]], atol=1e-6)


def test_calibrated_thresholds_are_the_best_f1_within_bounds():
    from training.audioset_bundle import MIN_THRESHOLD, Clip, calibrate_thresholds

    names = ["Siren", "Dog", "Bark", "Speech"]
    labels = label_slugs(names)
    clips = [Clip(REPO, "urbansound8k", c, 2) for c in ["siren"] * 4 + ["dog_bark"] * 4 + ["drilling"] * 4]
    peak = np.zeros((12, 4), np.float32)
    peak[:4, 0] = [0.30, 0.32, 0.4, 0.5]  # sirens: 0.3 keeps all four, drilling never reaches it
    peak[8:, 0] = 0.1
    peak[4:8, 1] = [0.9, 0.8, 0.1, 0.1]  # "Dog" finds half the barks: F1 0.67 < 0.7, no threshold
    peak[4:8, 2] = 0.05  # "Bark" best below the floor: clamped to the floor
    found = calibrate_thresholds(peak, clips, names, labels)
    assert found["siren"]["threshold"] == 0.3 and found["siren"]["f1"] == 1.0
    assert "dog" not in found and "speech" not in found
    assert "bark" not in found or found["bark"]["threshold"] >= MIN_THRESHOLD


def test_the_card_is_written_from_the_bundle_json(tmp_path):
    """`python -m training.audioset_bundle --out X --card-only` rewrites the card from the JSON
    (what the build measured: precision table, per-class table, thresholds, cost)."""
    import shutil

    from training.audioset_bundle import main

    need_audioset()
    for suffix in (".tflite", ".json"):
        shutil.copy(AUDIOSET.with_suffix(suffix), (tmp_path / "audioset").with_suffix(suffix))
    assert main(["--out", str(tmp_path / "audioset"), "--card-only"]) == 0
    card = (tmp_path / "audioset.md").read_text()
    for heading in ("## Provenance and licences", "## Precision and agreement", "## Which classes are reliable",
                    "## Thresholds", "## Cost"):  # fmt: skip
        assert heading in card
    assert "Apache License 2.0" in card and "CC BY-SA 4.0" in card and "CC BY 4.0" in card
    assert "469be6a3421cbc52cf97e9f2f966cba984198e8e7af9854d68b3e3ebb1e04194" in card
    assert card == AUDIOSET.with_suffix(".md").read_text()  # the shipped card is this one
