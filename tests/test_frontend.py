"""The log-mel front-end: batch = streaming, librosa-equal filter bank, resampling lands right."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from monitor.frontend import (
    YAMNET_FRONTEND,
    FrontendParams,
    LogMelFrontend,
    StreamingLogMel,
    known_variant,
    mel_filterbank,
    variant_mismatch,
)
from monitor.resample import StreamResampler, resample, to_mono
from tests.paths import bundled_clips


def real_audio(min_seconds: float) -> np.ndarray:
    """At least `min_seconds` of real recordings: the bundled clips joined end to end."""
    parts, total = [], 0
    for path in bundled_clips():
        audio, sr = sf.read(path, dtype="float32")
        assert sr == 16000
        parts.append(to_mono(audio))
        total += len(parts[-1])
        if total >= min_seconds * sr:
            break
    assert total >= min_seconds * 16000, "bundled clips are shorter than the test needs"
    return np.concatenate(parts)


def test_default_window_is_397_frames():
    assert FrontendParams().frames_for(4.0) == 397


@pytest.mark.parametrize("params", [FrontendParams(), YAMNET_FRONTEND], ids=["default", "yamnet"])
def test_streaming_equals_batch_over_a_minute_of_real_audio_in_random_blocks(params):
    audio = real_audio(60.0)
    batch = LogMelFrontend(params)(audio)
    stream = StreamingLogMel(params)
    rng = np.random.default_rng(1234)
    out, i = [], 0
    while i < len(audio):
        n = int(rng.integers(1, 4001))
        frames, _energy = stream.process(audio[i : i + n])
        out.append(frames)
        i += n
    streamed = np.concatenate(out)
    assert streamed.shape == batch.shape
    assert np.max(np.abs(streamed - batch)) < 1e-3  # dB (default), natural-log units (yamnet)


def test_filterbank_equals_librosa():
    librosa = pytest.importorskip("librosa", reason="librosa is in the 'train' extra")
    p = FrontendParams()
    ours = mel_filterbank(p)
    ref = librosa.filters.mel(sr=p.sample_rate, n_fft=p.n_fft, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_logmel_equals_librosa_on_real_audio():
    librosa = pytest.importorskip("librosa", reason="librosa is in the 'train' extra")
    audio = real_audio(4.0)[:64000]
    p = FrontendParams()
    mel = librosa.feature.melspectrogram(
        y=audio, sr=p.sample_rate, n_fft=p.n_fft, win_length=p.win_length, hop_length=p.hop_length,
        center=False, n_mels=p.n_mels, power=2.0,
    )
    ref = librosa.power_to_db(mel, ref=1.0, amin=p.amin, top_db=None).T
    ours = LogMelFrontend()(audio)
    assert ours.shape == ref.shape == (397, 64)
    assert np.max(np.abs(ours - ref)) < 1e-3


def test_fixed_reference_keeps_loudness():
    """A quieter copy is the same picture shifted down by the gain, not re-normalised."""
    audio = real_audio(4.0)[:64000]
    fe = LogMelFrontend()
    loud, quiet = fe(audio), fe(audio * 0.1)
    diff = (loud - quiet)[loud > -80]
    assert np.allclose(diff, 20.0, atol=0.05)


def test_silence_is_the_floor():
    assert np.allclose(LogMelFrontend()(np.zeros(16000, np.float32)), -100.0)


@pytest.mark.parametrize("in_rate", [44100, 48000, 22050])
def test_resampled_tone_lands_on_its_mel_band(in_rate):
    """A 1 kHz tone recorded at 44.1/48/22.05 kHz peaks in the mel band whose centre is ~1 kHz."""
    t = np.arange(int(2.0 * in_rate)) / in_rate
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    stream = StreamResampler(in_rate, 16000)
    blocks = [stream.process(tone[i : i + 1234]) for i in range(0, len(tone), 1234)]
    blocks.append(stream.process(np.zeros(0, np.float32), last=True))
    streamed = np.concatenate(blocks)
    whole = resample(tone, in_rate, 16000)
    assert abs(len(streamed) - 32000) <= 2 and abs(len(whole) - 32000) <= 2
    fe = LogMelFrontend()
    band = int(np.argmax(fe(streamed[1000:-1000]).mean(axis=0)))
    centres = fe.mel_basis.argmax(axis=1) * 16000 / 512
    assert abs(centres[band] - 1000.0) < 80.0


def test_stereo_is_averaged():
    stereo = np.stack([np.ones(10, np.float32), -np.ones(10, np.float32) * 0.5], axis=1)
    assert np.allclose(to_mono(stereo), 0.25)


# -- YAMNet's front-end variant ----------------------------------------------------------------


def yamnet_tf_logmel(audio: np.ndarray) -> np.ndarray:
    """YAMNet's own front-end in float (models/research/audioset/yamnet/features.py): tf.signal."""
    tf = pytest.importorskip("tensorflow", reason="tensorflow is in the 'train' extra")
    p = YAMNET_FRONTEND
    magnitude = tf.abs(tf.signal.stft(audio, frame_length=p.win_length, frame_step=p.hop_length, fft_length=p.n_fft))
    mel = tf.signal.linear_to_mel_weight_matrix(p.n_mels, p.n_fft // 2 + 1, p.sample_rate, p.fmin, p.fmax)
    return tf.math.log(tf.matmul(magnitude, mel) + p.log_offset).numpy()


def test_yamnet_variant_frames_like_yamnet():
    """400-sample frames (not 512): the export's 15600-sample input is 96 frames, 0.96 s of hops."""
    p = YAMNET_FRONTEND
    assert p.frame_span == 400 and p.frames_for(0.975) == 96 and p.frames_for(0.96) == 94
    assert LogMelFrontend(p)(np.zeros(15600, np.float32)).shape == (96, 64)
    assert np.allclose(LogMelFrontend(p)(np.zeros(15600, np.float32)), np.log(0.001))  # silence floor


@pytest.mark.integration  # TensorFlow
def test_htk_filterbank_equals_tf_signal():
    tf = pytest.importorskip("tensorflow", reason="tensorflow is in the 'train' extra")
    p = YAMNET_FRONTEND
    ref = tf.signal.linear_to_mel_weight_matrix(p.n_mels, p.n_fft // 2 + 1, p.sample_rate, p.fmin, p.fmax).numpy()
    np.testing.assert_allclose(mel_filterbank(p), ref.T, atol=1e-5)


@pytest.mark.integration  # TensorFlow
def test_yamnet_variant_equals_yamnets_float_frontend_on_real_audio():
    """Our numpy patch equals YAMNet's tf.signal recipe within 1e-3 (measured: 6e-5 over 40 clips)."""
    audio = real_audio(10.0)[:160000]
    ref = yamnet_tf_logmel(audio)
    ours = LogMelFrontend(YAMNET_FRONTEND)(audio)
    assert ours.shape == ref.shape == (998, 64)
    assert np.max(np.abs(ours - ref)) < 1e-3


def test_default_params_serialise_as_before_and_old_dicts_load():
    """Parameters added for variants are written only when not at their default: a default bundle's
    JSON is byte for byte what it was, an older soundmon still reads it, and an old one loads."""
    old_keys = ["sample_rate", "win_length", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "mel_scale",
                "power", "amin", "ref", "center"]  # fmt: skip
    d = FrontendParams().to_dict()
    assert list(d) == old_keys
    assert FrontendParams.from_dict(d) == FrontendParams()
    y = YAMNET_FRONTEND.to_dict()
    assert y["frame_length"] == 400 and y["log_scale"] == "ln" and y["log_offset"] == 0.001
    assert FrontendParams.from_dict(y) == YAMNET_FRONTEND


def test_known_variants_and_one_line_mismatch():
    assert known_variant(FrontendParams()) == "soundmon" and known_variant(YAMNET_FRONTEND) == "yamnet"
    assert variant_mismatch(YAMNET_FRONTEND) is None
    off = FrontendParams.from_dict({**YAMNET_FRONTEND.to_dict(), "fmin": 100.0})
    assert variant_mismatch(off) == "fmin=100.0 (daemon's yamnet variant: 125.0)"
    assert variant_mismatch(FrontendParams(n_mels=40)) == "n_mels=40 (daemon: 64)"


@pytest.mark.parametrize(
    "bad",
    [{"log_scale": "log10"}, {"log_scale": "ln", "log_offset": 0.0}, {"frame_length": 600}, {"mel_scale": "mystery"}],
)
def test_impossible_variant_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        LogMelFrontend(FrontendParams(**bad))


@pytest.mark.parametrize("device_rate", [48000, 44100, 32000])
def test_a_stream_resampler_says_how_much_its_filter_holds_back(device_rate):
    """`held_back`: what a stream ended without flushing (a device reopened) never delivers; the
    microphone counts it with the gap, so stream offsets stay true."""
    rs = StreamResampler(device_rate, 16000)
    rng = np.random.default_rng(0)
    got = sum(len(rs.process(rng.standard_normal(device_rate // 20).astype(np.float32))) for _ in range(40))
    held = rs.held_back
    assert held > 0 and got + held == 2 * 16000  # 2 s of audio in
    assert len(rs.process(np.zeros(0, np.float32), last=True)) == pytest.approx(held, abs=1)  # the flushed tail
    assert StreamResampler(16000, 16000).held_back == 0
