"""A real FLAC file that libsndfile opens but cannot decode to the end (a decode error part-way).

Made from the demo recording: encoded to FLAC with soundfile, then 200 bytes at 97 % of the file
are overwritten, which makes libFLAC lose sync in the last second. `corrupt_flac` checks that
the file really fails in the middle (not at open, not never), so tests built on it cannot
pass vacuously if a future libsndfile resynchronises differently.
"""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from tests.paths import DEMO

__all__ = ["corrupt_flac"]


def corrupt_flac(directory: Path, source: Path = DEMO, at: float = 0.97, length: int = 200) -> tuple[Path, float]:
    """Write `<directory>/corrupt.flac`; return its path and how many seconds decode before the error."""
    audio, rate = sf.read(str(source), dtype="float32")
    path = Path(directory) / "corrupt.flac"
    sf.write(str(path), audio, rate, format="FLAC", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    data[start : start + length] = bytes((i * 37 + 11) % 256 for i in range(length))
    path.write_bytes(bytes(data))
    decoded = 0
    with sf.SoundFile(str(path)) as f:  # opens fine: the header is intact
        total = f.frames
        try:
            while True:
                block = f.read(rate // 10, dtype="float32")
                if not len(block):
                    break
                decoded += len(block)
        except (sf.LibsndfileError, RuntimeError):
            pass
        else:
            raise AssertionError(f"{path}: decodes to the end, the corruption did nothing")
    assert 0.5 * total < decoded < total, f"{path}: fails after {decoded} of {total} frames, not part-way"
    return path, decoded / rate
