"""What the daemon needs of an audio source: `Source`, met by `monitor.mic_source.MicSource`,
`monitor.file_source.FileSource` and the daemon's `RepeatedFileSource` (a file played n times).

A source delivers mono float32 blocks at the bundle's sample rate from its own thread or
file; the daemon's loop only calls `read` and looks at the counters below.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Source"]


@runtime_checkable
class Source(Protocol):
    """An audio source as `monitor.daemon.Daemon` uses it."""

    def start(self) -> None:
        """Begin delivering audio (open the device or the file); a one-line SoundmonError if it
        cannot."""
        ...

    def stop(self) -> None:
        """Stop delivering and release the device or file; idempotent."""
        ...

    def read(self, timeout: float, want: int = 1) -> np.ndarray:
        """The audio available now, waiting at most `timeout` seconds for about `want` samples
        (never waiting past the moment `want` arrive: `monitor.resample.device_frames_for`): a
        1-D float32 array at the target rate, possibly empty. A file source raises AudioFileError
        on a decode error (after delivering everything before it)."""
        ...

    @property
    def finished(self) -> bool:
        """True once the last block has been read (a file's end); a microphone never finishes."""
        ...

    @property
    def health(self) -> str:
        """`ok`, or what is wrong (`stopped`, `reopening`, `silent`, ...): `<base>/stats`' `audio`."""
        ...

    @property
    def gap_count(self) -> int:
        """Gaps in the audio so far (a device reopened, samples dropped); the daemon resets the
        pipeline's windows at each new one."""
        ...

    @property
    def last_gap_samples(self) -> int:
        """Audio lost at the latest gap, in samples at the target rate (0 when unknown or none)."""
        ...

    @property
    def stats(self) -> dict[str, Any]:
        """Counters for `<base>/stats`: `dropped_samples`, `overflows`, `reopen_count` (each
        optional, 0 when missing) and whatever else the source reports."""
        ...
