"""Dataset readers, feature cache and augmentation of the training module (real audio, no mocks)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from monitor.frontend import FrontendParams, LogMelFrontend
from monitor.windows import file_windows
from training.augment import AugmentConfig, Augmenter, place_in_window
from training.datasets import (
    URBAN10_LABELS,
    DatasetError,
    load_audio,
    parse_renames,
    read_dataset,
    read_esc50,
    read_folders,
    read_urbansound8k,
)
from training.features import clip_windows, compute_features, floor_db

CLIPS = Path(__file__).resolve().parent / "data" / "clips"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _need_shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.is_dir():
        pytest.skip("needs ../shared/data (the large dataset)")
    return path


# -- readers ----------------------------------------------------------------------------------


def test_urbansound8k_reader_on_test_clips():
    ds = read_urbansound8k(CLIPS)
    assert ds.labels == URBAN10_LABELS  # classID order
    assert len(ds.clips) == 20 and ds.missing == []
    assert ds.folds == [1, 2]
    assert all(c.path.is_file() and c.group.startswith("fs") for c in ds.clips)
    assert read_dataset(CLIPS).format == "urbansound8k"  # detected


def test_missing_files_are_counted_not_fatal(tmp_path):
    shutil.copytree(CLIPS, tmp_path / "us8k")
    meta = tmp_path / "us8k" / "metadata.csv"
    rows = meta.read_text().splitlines()
    rows.append("999999-3-0-0.flac,999999,0,4,1,1,3,dog_bark")
    rows.append("999998-6-0-0.flac,999998,0,1,1,2,6,gun_shot")
    meta.write_text("\n".join(rows) + "\n")
    (tmp_path / "us8k" / "fold1" / "180256-3-0-0.flac").unlink()
    ds = read_urbansound8k(tmp_path / "us8k")
    assert len(ds.clips) == 19
    assert len(ds.missing) == 3
    assert "3 listed file(s) missing" in ds.summary()


def test_choose_folds_and_classes():
    ds = read_urbansound8k(CLIPS, classes=["siren", "dog_bark"], folds=[2])
    assert ds.labels == ["siren", "dog_bark"]
    assert {c.label for c in ds.clips} == {"siren", "dog_bark"} and ds.folds == [2]
    with pytest.raises(DatasetError, match="unknown class"):
        read_urbansound8k(CLIPS, classes=["dog"])
    with pytest.raises(DatasetError, match="fold"):
        read_urbansound8k(CLIPS, folds=[7])


def test_esc50_renaming():
    root = _need_shared("ESC-50")
    renames = parse_renames(["dog=dog_bark,chainsaw=drilling"])
    ds = read_esc50(root, classes=["dog_bark", "drilling", "rooster"], renames=renames)
    assert ds.labels == ["dog_bark", "drilling", "rooster"]
    counts = {lab: sum(c.label == lab for c in ds.clips) for lab in ds.labels}
    assert counts["dog_bark"] >= 10 and counts["drilling"] >= 10
    assert ds.folds == [1, 2]
    # Groups are Freesound source recordings: no group on both sides of a fold split.
    folds_of = {}
    for c in ds.clips:
        folds_of.setdefault(c.group, set()).add(c.fold)
    assert all(len(f) == 1 for f in folds_of.values())


def _write_tone(path: Path, freq: float, seconds: float = 1.0, rate: int = 22050) -> None:
    t = np.arange(int(seconds * rate)) / rate
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)


def test_folders_grouped_by_recording(tmp_path):
    root = tmp_path / "mine"
    for cls, f in (("whistle", 1000.0), ("hum", 100.0)):
        for rec in range(6):
            for clip in range(3):
                _write_tone(root / cls / f"{cls}rec{rec}_{clip}.wav", f * (1 + 0.05 * rec))
    (root / "hum" / "kitchen").mkdir()
    _write_tone(root / "hum" / "kitchen" / "a.wav", 120.0)
    _write_tone(root / "hum" / "kitchen" / "b.wav", 120.0)
    ds = read_folders(root)
    assert ds.labels == ["hum", "whistle"] and len(ds.clips) == 38
    groups = {}
    for c in ds.clips:
        groups.setdefault(c.group, set()).add(c.fold)
    assert len(groups) == 13  # 12 loose recordings + the kitchen sub-folder
    assert all(len(f) == 1 for f in groups.values()), "clips of one recording on both sides"
    assert len(ds.folds) >= 2
    assert read_dataset(root).format == "folders"
    # explicit fold folders are honoured
    root2 = tmp_path / "mine2"
    for cls in ("a", "b"):
        for fold in (1, 2):
            _write_tone(root2 / cls / f"fold{fold}" / "x.wav", 440.0)
    ds2 = read_folders(root2)
    assert ds2.folds == [1, 2] and len(ds2.clips) == 4


def _folds_per_recording(ds, source_of) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for c in ds.clips:
        out.setdefault(source_of(c.path.stem), set()).add(c.fold)
    return out


def test_folders_keep_the_takes_of_an_esc50_recording_in_one_fold(tmp_path):
    """ESC-10 clips as a folder per class without fold folders (issue #20): the takes A/B/C of one
    Freesound recording (`1-100032-A-0`, `1-100032-B-0`) must share a fold. Grouped by the name
    minus a trailing counter, 22 of these 121 recordings landed in more than one fold."""
    import csv

    esc = _need_shared("ESC-50")
    root = tmp_path / "esc10"
    with (esc / "meta" / "esc50.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            src = esc / "audio" / row["filename"]
            if row["esc10"] == "True" and src.is_file():
                (root / row["category"]).mkdir(parents=True, exist_ok=True)
                (root / row["category"] / row["filename"]).symlink_to(src)
    ds = read_folders(root)
    per_recording = _folds_per_recording(ds, lambda stem: stem.split("-")[1])
    takes = sum(1 for c in ds.clips if c.path.stem.split("-")[2] != "A")
    assert takes > 0 and len(per_recording) < len(ds.clips), "no recording with several takes here"
    split = sorted(k for k, v in per_recording.items() if len(v) > 1)
    assert split == [], f"{len(split)} of {len(per_recording)} recordings in more than one fold"
    assert len(ds.folds) == 5


def test_folders_keep_an_urbansound8k_recording_together_across_classes(tmp_path):
    """UrbanSound8K names (`{fsID}-{classID}-{occurrence}-{slice}`) group by fsID over every
    class folder, as the official folds do: one street recording holds a siren and a horn."""
    root = tmp_path / "us8k_as_folders"
    for clip in sorted(CLIPS.glob("fold*/*.flac")):
        fs_id, class_id, occ, slc = clip.stem.split("-")
        label = URBAN10_LABELS[int(class_id)]
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / clip.name).symlink_to(clip)
    # The siren clip 157867-8-0-18 again, named as another slice of its recording under car_horn.
    (root / "car_horn" / "157867-1-0-3.flac").symlink_to(CLIPS / "fold1" / "157867-8-0-18.flac")
    ds = read_folders(root)
    assert len(ds.clips) == 21
    same = [c for c in ds.clips if c.path.stem.startswith("157867-")]
    assert {c.group for c in same} == {"fs157867"} and len({c.fold for c in same}) == 1
    assert len({c.group for c in ds.clips}) == 20
    # A date-like name of one's own is not read as an UrbanSound8K name.
    (root / "siren" / "2024-05-01-3.flac").symlink_to(CLIPS / "fold2" / "102871-8-0-4.flac")
    assert {c.group for c in read_folders(root).clips if c.path.stem == "2024-05-01-3"} == {"siren/2024"}


def test_fold_folders_that_split_a_recording_are_reported(tmp_path):
    """With the user's own foldN/ folders the folds are kept as given, but a recording the name
    rules recognise in two fold folders is counted and named in the summary (the figures of such
    a split are optimistic), and the card says how many."""
    root = tmp_path / "folded"
    for fold in (1, 2):
        (root / "siren" / f"fold{fold}").mkdir(parents=True)
        (root / "dog_bark" / f"fold{fold}").mkdir(parents=True)
        (root / "dog_bark" / f"fold{fold}" / f"rec{fold}.flac").symlink_to(CLIPS / "fold1/180256-3-0-0.flac")
    (root / "siren" / "fold1" / "157867-8-0-18.flac").symlink_to(CLIPS / "fold1/157867-8-0-18.flac")
    # another slice of recording 157867, filed under fold 2
    (root / "siren" / "fold2" / "157867-8-0-25.flac").symlink_to(CLIPS / "fold2/102871-8-0-4.flac")
    ds = read_folders(root)
    assert ds.split_info() == {"rule": "fold folders", "recordings": 3, "recordings_in_several_folds": 1}
    assert "warning: 1 source recording(s) have clips in more than one fold folder" in ds.summary()


def test_groups_csv_names_the_recording_of_each_file(tmp_path):
    """`groups.csv` (file,group) at the root groups files whose names follow no rule; a listed file
    that is not there is one clear error, not a silently split recording."""
    root = tmp_path / "mine"
    clips = bundled_clips_by_class()
    names = {}
    for label, paths in clips.items():
        (root / label).mkdir(parents=True)
        for i, clip in enumerate(paths):
            name = f"{label}/take{'xy'[i]}.flac"  # no counter: every file its own group by name
            (root / name).symlink_to(clip)
            names.setdefault(label, []).append(name)
    assert len({c.group for c in read_folders(root).clips}) == 20
    rows = ["file,group"] + [f"{n},{label}_morning" for label, ns in names.items() for n in ns]
    (root / "groups.csv").write_text("\n".join(rows) + "\n")
    ds = read_folders(root)
    assert len({c.group for c in ds.clips}) == 10
    for label in names:
        assert len({c.fold for c in ds.clips if c.label == label}) == 1
    (root / "groups.csv").write_text("file,group\nsiren/nope.flac,a\n")
    with pytest.raises(DatasetError, match=r"groups.csv: siren/nope.flac is not a file"):
        read_folders(root)


def bundled_clips_by_class() -> dict[str, list[Path]]:
    """The 20 test clips by class name (2 each), from their UrbanSound8K names."""
    out: dict[str, list[Path]] = {}
    for clip in sorted(CLIPS.glob("fold*/*.flac")):
        out.setdefault(URBAN10_LABELS[int(clip.stem.split("-")[1])], []).append(clip)
    return out


def test_load_audio_resamples_and_downmixes(tmp_path):
    rate = 44100
    stereo = np.stack([np.ones(rate), -np.ones(rate) * 0.5], axis=1).astype(np.float32) * 0.2
    sf.write(tmp_path / "s.wav", stereo, rate)
    audio = load_audio(tmp_path / "s.wav")
    assert audio.ndim == 1 and abs(len(audio) - 16000) <= 1
    assert abs(float(np.median(audio)) - 0.05) < 1e-3


# -- features -------------------------------------------------------------------------------


def test_feature_cache_is_read_back_without_decoding_and_matches_file_windows(tmp_path, monkeypatch):
    ds = read_urbansound8k(CLIPS)
    params = FrontendParams()
    first = compute_features(ds.clips, params, cache_dir=tmp_path, workers=1, progress=False)

    # The second call must come from the cache: decoding any audio would be a miss. (Checked
    # this way, not by timing: no test asserts a timing on this shared machine.)
    def no_decoding(*_args, **_kwargs):
        raise AssertionError("a cached clip was decoded again")

    monkeypatch.setattr("training.features.load_audio", no_decoding)
    second = compute_features(ds.clips, params, cache_dir=tmp_path, workers=1, progress=False)
    monkeypatch.undo()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.logmel, b.logmel)
        assert a.n_valid == b.n_valid
    # The cached windows are exactly the daemon's file rule.
    fe = LogMelFrontend(params)
    for clip, f in list(zip(ds.clips, first, strict=True))[:4]:
        want = file_windows(load_audio(clip.path), fe, 4.0, hop_seconds=0.5)
        np.testing.assert_array_equal(clip_windows(f, params, 4.0, 0.5), want)
    # A different front-end is a different cache key (no stale features).
    other = compute_features(
        ds.clips[:2], FrontendParams(n_mels=40), cache_dir=tmp_path, workers=1, progress=False
    )
    assert other[0].logmel.shape[1] == 40


def test_parallel_features_equal_serial(tmp_path):
    ds = read_urbansound8k(CLIPS, folds=[1])
    serial = compute_features(ds.clips, cache_dir=tmp_path / "a", workers=1, progress=False)
    parallel = compute_features(ds.clips, cache_dir=tmp_path / "b", workers=2, progress=False)
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a.logmel, b.logmel)


# -- augmentation ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_feats(tmp_path_factory):
    ds = read_urbansound8k(CLIPS)
    return ds, compute_features(
        ds.clips, cache_dir=tmp_path_factory.mktemp("c"), workers=1, progress=False
    )


def test_augmentation_is_seedable_and_switchable(clip_feats):
    ds, feats = clip_feats
    y = ds.y()
    idx = np.arange(8)
    floor = floor_db(FrontendParams())

    def batch(cfg, seed):
        return Augmenter(cfg, 397, 10, -40.0, 20.0, floor, seed).batch(feats, y, idx)

    a1, y1 = batch(AugmentConfig(), 1)
    a2, y2 = batch(AugmentConfig(), 1)
    b, _ = batch(AugmentConfig(), 2)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(a1, b)
    assert a1.shape == (8, 397, 64, 1) and np.allclose(y1.sum(1), 1.0)
    # Off: the evaluation placement, one-hot labels, no randomness.
    off, yo = batch(AugmentConfig.off(), 3)
    for j, i in enumerate(idx):
        want = (place_in_window(feats[i].logmel, feats[i].n_valid, 397, 0, floor) + 40.0) / 20.0
        np.testing.assert_allclose(off[j, ..., 0], want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(yo.argmax(1), y[idx])
    # Each piece switches on its own: gain only changes levels, nothing else.
    only_gain = AugmentConfig.only(["gain"]).with_(gain_db=6.0)  # `soundmon train --augment gain`
    g, _ = batch(only_gain, 4)
    diff = (g - off)[..., 0] * 20.0
    real = (off[..., 0] * 20.0 - 40.0) > floor + 10
    per_clip = [np.unique(np.round(diff[j][real[j]], 3)) for j in range(8)]
    assert all(len(u) == 1 and abs(u[0]) <= 6.0 for u in per_clip)


def test_augment_list_names_what_stays_on():
    plain = AugmentConfig.only(["time_shift", "gain"])  # the plain-CNN recipe
    assert plain.time_shift and plain.gain_db == 10.0
    assert plain.p_onset == plain.p_mix == plain.p_background == plain.p_stretch == 0
    assert plain.p_pitch == plain.p_eq == plain.time_masks == plain.freq_masks == 0
    with pytest.raises(ValueError, match=r"unknown augmentation\(s\) \['echo'\]"):
        AugmentConfig.only(["gain", "echo"])


def test_time_shift_places_short_clip_anywhere(clip_feats):
    ds, feats = clip_feats
    short = next(i for i, f in enumerate(feats) if f.n_valid < 200)
    floor = floor_db(FrontendParams())
    cfg = AugmentConfig(p_start=0.0, p_mix=0, p_background=0, p_stretch=0, p_pitch=0, gain_db=0,
                        time_masks=0, freq_masks=0)  # fmt: skip
    aug = Augmenter(cfg, 397, 10, 0.0, 1.0, floor, seed=5)
    starts = set()
    for _ in range(10):
        w = aug.window(feats[short].logmel, feats[short].n_valid)
        starts.add(int(np.argmax(w.max(1) > floor)))
    assert len(starts) > 3


def test_onset_placement_shows_the_start_of_a_sound_at_the_window_end(clip_feats):
    """What the daemon's newest window holds just after a sound begins: the clip's first frames,
    at the end of the window, with nothing of the clip before them."""
    ds, feats = clip_feats
    long = next(i for i, f in enumerate(feats) if f.n_valid >= 397)
    floor = floor_db(FrontendParams())
    cfg = AugmentConfig(p_onset=1.0, p_mix=0, p_background=0, p_stretch=0, p_pitch=0, gain_db=0,
                        time_masks=0, freq_masks=0)  # fmt: skip
    aug = Augmenter(cfg, 397, 10, 0.0, 1.0, floor, seed=3)
    x = feats[long].logmel
    visible = set()
    for _ in range(10):
        w = aug.window(x, feats[long].n_valid)
        k = 397 - int(np.argmax(np.any(w > floor, axis=1)))  # frames from the first real one to the end
        np.testing.assert_array_equal(w[397 - k :], x[:k])
        assert np.all(w[: 397 - k] == floor)
        visible.add(k)
    assert min(visible) >= cfg.onset_min_frames and len(visible) > 5
