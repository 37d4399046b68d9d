"""training.lowpass and tools.lowpass_recordings: a recordings folder as heard through a window, same layout."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tools.lowpass_recordings import lowpass_recordings, main
from training.lowpass import lowpass


def _tones(sr: int = 16000, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.2 * np.sin(2 * np.pi * 200 * t) + 0.2 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)


def _band_rms(x: np.ndarray, hz: float, sr: int = 16000) -> float:
    spec = np.abs(np.fft.rfft(x[sr // 2 :]))  # past the filter's settling
    k = int(round(hz * len(x[sr // 2 :]) / sr))
    return float(np.sqrt((spec[k - 3 : k + 4] ** 2).sum()))


def test_the_lows_pass_and_the_highs_lose_12_db_per_octave_past_the_cutoff():
    x = _tones()
    y = lowpass(x, 16000, 1500.0)
    assert y.dtype == np.float32 and len(y) == len(x)
    assert _band_rms(y, 200) == pytest.approx(_band_rms(x, 200), rel=0.02)
    # 6 kHz is two octaves above 1.5 kHz: about 24 dB down for order 2
    assert 20 * np.log10(_band_rms(y, 6000) / _band_rms(x, 6000)) < -20


def test_a_recordings_folder_is_copied_with_its_labels_and_low_passed_audio(tmp_path):
    src = tmp_path / "rec"
    src.mkdir()
    (src / "labels.csv").write_text("fsID,fold,class,classID,start,end\n1,1,siren,8,0.0,2.0\n")
    (src / "slices.csv").write_text("slice_file_name,fsID\n")
    sf.write(src / "1.flac", _tones(), 16000, subtype="PCM_16")
    assert main([str(src), str(tmp_path / "out"), "--cutoff-hz", "1000"]) == 0
    out = tmp_path / "out"
    assert (out / "labels.csv").read_text() == (src / "labels.csv").read_text()
    assert (out / "slices.csv").is_file()
    y, sr = sf.read(out / "1.flac", dtype="float32")
    assert sr == 16000 and len(y) == 32000
    assert _band_rms(y, 6000) < 0.05 * _band_rms(_tones(), 6000)


def test_a_folder_without_labels_is_refused_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no labels.csv"):
        lowpass_recordings(tmp_path, tmp_path / "out", 1500.0)
