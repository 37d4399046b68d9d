"""FileSource: formats, rates and channels, streaming, pacing, end of stream, broken files."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from monitor.errors import AudioFileError
from monitor.file_source import FileSource

RATE = 16000
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _tone(freq: float, seconds: float, rate: int, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def _drain(src: FileSource, timeout: float = 0.5, limit_s: float = 120.0) -> np.ndarray:
    out = []
    deadline = time.monotonic() + limit_s
    while not src.finished and time.monotonic() < deadline:
        out.append(src.read(timeout))
    assert src.finished
    assert src.read(timeout).size == 0  # after the end: nothing, immediately
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


@pytest.mark.parametrize(
    ("fmt", "subtype", "suffix", "channels"),
    [
        ("WAV", "PCM_16", ".wav", 4),
        ("WAV", "FLOAT", ".wav", 2),
        ("FLAC", "PCM_24", ".flac", 3),
        ("OGG", "VORBIS", ".ogg", 3),
        ("MP3", "MPEG_LAYER_III", ".mp3", 2),  # MP3 is at most stereo
    ],
)
def test_decodes_every_format_multichannel_44k1_to_16k_mono(
    tmp_path: Path, fmt: str, subtype: str, suffix: str, channels: int
) -> None:
    path = tmp_path / f"tone{suffix}"
    sf.write(str(path), _tone(1000, 2.0, 44100, channels=channels), 44100, format=fmt, subtype=subtype)
    src = FileSource(path, RATE, pace="fast", block_seconds=0.1)
    assert src.path == path and src.sample_rate == 44100 and src.channels == channels
    assert src.duration_s == pytest.approx(2.0, abs=0.1)  # mp3 adds encoder padding
    got = _drain(src)
    assert got.dtype == np.float32 and got.ndim == 1
    assert len(got) == pytest.approx(src.duration_s * RATE, abs=RATE * 0.02)  # flushed tail included
    mid = got[RATE // 2 : RATE // 2 + 8192]
    assert abs(_peak_hz(mid, RATE) - 1000) < 5
    assert 0.3 < np.sqrt(np.mean(mid**2)) < 0.4  # 0.5 amplitude sine; downmix kept the level


def test_16k_mono_file_comes_out_sample_exact(tmp_path: Path) -> None:
    x = np.round(np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 3 + 123) * 32767) / 32768
    path = tmp_path / "x.flac"
    sf.write(str(path), x, RATE, subtype="PCM_16")
    got = _drain(FileSource(path, RATE, pace="fast", block_seconds=0.05))
    np.testing.assert_array_equal(got, x.astype(np.float32))


def test_streams_a_long_file_block_by_block(tmp_path: Path) -> None:
    """A 10-minute file: each read returns one block, never the whole file."""
    path = tmp_path / "long.wav"
    with sf.SoundFile(str(path), "w", samplerate=RATE, channels=1, subtype="PCM_16") as f:
        for _ in range(60):
            f.write(_tone(440, 10.0, RATE, amp=0.1))
    src = FileSource(path, RATE, pace="fast", block_seconds=0.5)
    assert src.duration_s == pytest.approx(600.0)
    sizes = []
    while not src.finished:
        sizes.append(len(src.read(0.1)))
    assert max(sizes) == RATE // 2 and sum(sizes) == 600 * RATE


def test_realtime_pace_takes_the_audio_duration_and_fast_does_not_wait(tmp_path: Path) -> None:
    path = tmp_path / "one_second.wav"
    sf.write(str(path), _tone(440, 1.0, 22050), 22050, subtype="PCM_16")
    src = FileSource(path, RATE, pace="realtime", block_seconds=0.1)
    t0 = time.monotonic()
    src.start()
    got = _drain(src, timeout=0.05)
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.9  # paced: a lower bound only (no speed assertions)
    assert len(got) == pytest.approx(RATE, abs=10)
    fast = FileSource(path, RATE, pace="fast")
    assert len(_drain(fast)) == len(got)


def test_realtime_read_returns_early_with_nothing_when_no_block_is_due(tmp_path: Path) -> None:
    path = tmp_path / "t.wav"
    sf.write(str(path), _tone(440, 1.0, RATE), RATE)
    src = FileSource(path, RATE, pace="realtime", block_seconds=0.5)
    src.start()
    assert src.read(0.01).size == 0  # the first 0.5 s block is not due yet
    assert len(src.read(1.0)) == RATE // 2
    assert not src.finished


@pytest.mark.needs_shared
def test_real_recording_from_shared_data(tmp_path: Path) -> None:
    path = SHARED_DATA / "recordings" / "118101.flac"
    if not path.is_file():
        pytest.skip("needs ../shared/data (recordings/118101.flac)")
    src = FileSource(path, RATE, pace="fast")
    ref, _ = sf.read(str(path), dtype="float32")
    np.testing.assert_array_equal(_drain(src), ref)


@pytest.mark.parametrize("content", [b"", b"RIFF\x24\x00\x00\x00WAVEjunkjunkjunk", b"not audio at all " * 100])
def test_undecodable_file_is_one_line_audio_file_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(AudioFileError) as err:
        FileSource(path, RATE)
    msg = str(err.value)
    assert msg.startswith(f"cannot decode {path}: ") and "\n" not in msg and len(msg) > len(str(path)) + 17


def test_missing_file_and_directory_are_audio_file_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="cannot decode .*nope.flac: "):
        FileSource(tmp_path / "nope.flac", RATE)
    with pytest.raises(AudioFileError, match="is a directory"):
        FileSource(tmp_path, RATE)


def test_truncated_flac_fails_clearly_not_with_a_traceback(tmp_path: Path) -> None:
    good = tmp_path / "good.flac"
    sf.write(str(good), _tone(440, 2.0, RATE), RATE)
    bad = tmp_path / "truncated.flac"
    bad.write_bytes(good.read_bytes()[:200])
    try:
        src = FileSource(bad, RATE, pace="fast")
    except AudioFileError as exc:
        assert str(exc).startswith(f"cannot decode {bad}: ")
        return
    try:  # libsndfile may accept the header and hit the end early: that must end the stream cleanly
        _drain(src)
    except AudioFileError as exc:
        assert str(exc).startswith(f"cannot decode {bad}: ")


def test_stop_ends_the_stream(tmp_path: Path) -> None:
    path = tmp_path / "t.wav"
    sf.write(str(path), _tone(440, 1.0, RATE), RATE)
    with FileSource(path, RATE, pace="fast") as src:
        assert len(src.read(0.1)) > 0 and src.health == "ok"
    assert src.finished and src.health == "stopped" and src.read(0.1).size == 0
    assert src.gap_count == 0 and src.stats["duration_s"] == pytest.approx(1.0)


def test_rejects_bad_pace(tmp_path: Path) -> None:
    path = tmp_path / "t.wav"
    sf.write(str(path), _tone(440, 0.1, RATE), RATE)
    with pytest.raises(ValueError, match="pace"):
        FileSource(path, RATE, pace="slow")  # type: ignore[arg-type]


@pytest.mark.parametrize(("fmt", "subtype"), [("MP3", "MPEG_LAYER_III"), ("OGG", "VORBIS"), ("FLAC", "PCM_16")])
def test_block_reads_equal_one_whole_file_read(tmp_path: Path, fmt: str, subtype: str) -> None:
    """Regression: python-soundfile's seek after each read() garbles MP3 blocks; ours must not."""
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(str(path), _tone(1000, 3.0, RATE, channels=2), RATE, format=fmt, subtype=subtype)
    whole, _ = sf.read(str(path), dtype="float32", always_2d=True)
    got = _drain(FileSource(path, RATE, pace="fast", block_seconds=0.1))
    np.testing.assert_allclose(got, whole.mean(axis=1), atol=1e-6)  # mpg123 may differ in the last bit


def test_decode_error_part_way_delivers_the_decoded_audio_then_raises(tmp_path: Path) -> None:
    """A FLAC that fails at ~32 s of 33 s: all audio before the error comes out (the same
    samples as the clean file), then one read raises a one-line AudioFileError saying where."""
    from tests.corrupt_audio import corrupt_flac
    from tests.paths import DEMO

    bad, decodable_s = corrupt_flac(tmp_path)
    src = FileSource(bad, RATE, pace="fast", block_seconds=0.05)  # opens: the start decodes
    got: list[np.ndarray] = []
    with pytest.raises(AudioFileError) as err:
        for _ in range(10_000):
            got.append(src.read(0.1))
    audio = np.concatenate(got)
    msg = str(err.value)
    assert msg.startswith(f"cannot decode {bad} after ") and " s of 33.0 s: " in msg and "\n" not in msg
    assert src.finished and src.read(0.1).size == 0
    assert src.error is err.value
    # Everything libsndfile could decode (to within one block) came out, sample-exact.
    assert decodable_s - 0.05 <= len(audio) / RATE <= decodable_s + 0.1
    assert src.decoded_s == pytest.approx(len(audio) / RATE, abs=0.01)
    clean, _ = sf.read(str(DEMO), dtype="float32")
    np.testing.assert_allclose(audio, clean[: len(audio)], atol=1 / 32768)


@pytest.mark.parametrize(("fmt", "channels"), [("WAV", 1), ("WAV", 2), ("FLAC", 3)])
def test_16_bit_pcm_read_as_int16_equals_libsndfiles_float_read(tmp_path: Path, fmt: str, channels: int) -> None:
    """A 16-bit file is read as int16 and scaled here (speed): the same float32 samples, bit for
    bit, as libsndfile's own float read, full scale included."""
    from monitor.resample import to_mono

    pcm = np.random.default_rng(1).integers(-32768, 32768, size=(16000 * 2 + 77, channels), dtype=np.int16)
    pcm[:4] = [[-32768], [32767], [0], [-1]]
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(str(path), pcm, RATE, format=fmt, subtype="PCM_16")
    whole, _ = sf.read(str(path), dtype="float32", always_2d=True)
    got = _drain(FileSource(path, RATE, pace="fast", block_seconds=0.05))
    np.testing.assert_array_equal(got, to_mono(whole))


def test_asked_for_a_hop_a_read_returns_the_blocks_that_complete_it(tmp_path: Path) -> None:
    """`read(timeout, want)`: the blocks up to `want` samples in one call (the daemon asks for
    the audio of its next window), one block when `want` is 1; the same samples either way."""
    path = tmp_path / "t.wav"
    sf.write(str(path), _tone(440, 2.0, RATE), RATE, subtype="PCM_16")
    block = RATE // 20
    fast = FileSource(path, RATE, pace="fast", block_seconds=0.05)
    assert len(fast.read(0.1)) == block
    assert len(fast.read(0.1, want=4000)) == 5 * block  # 4000 samples: 5 blocks of 800
    assert len(fast.read(0.1, want=800)) == block
    rest = _drain(fast)
    one_by_one = _drain(FileSource(path, RATE, pace="fast", block_seconds=0.05))
    assert len(rest) + 7 * block == len(one_by_one)
    paced = FileSource(path, RATE, pace="realtime", block_seconds=0.05)
    paced.start()
    assert len(paced.read(1.0, want=4000)) == 5 * block  # waits for the 5th block, then returns


def test_asked_for_44k1_audio_at_16k_a_read_never_takes_a_block_more_than_needed(tmp_path: Path) -> None:
    path = tmp_path / "t44.wav"
    sf.write(str(path), _tone(440, 2.0, 44100), 44100, subtype="PCM_16")
    src = FileSource(path, RATE, pace="fast", block_seconds=0.05)  # 2205 frames per block
    src.read(0.1)
    before = src.stats["position_s"]
    src.read(0.1, want=4000)  # 4000 samples at 16 kHz = 11025 frames at 44.1 kHz: 5 blocks, not 6
    assert round((src.stats["position_s"] - before) * 44100) == 5 * 2205
