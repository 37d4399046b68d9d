"""A recordings folder as a microphone indoors would hear it: every recording low-passed.

    python -m tools.lowpass_recordings ../shared/data/recordings runs/rec_lp1500 --cutoff-hz 1500
    soundmon evaluate --model models/urban10 --recordings runs/rec_lp1500

A closed window or a wall takes the highs off a street sound (a pane of glass loses about 6 dB
more per octave, heavier walls more), and so does distance. The copy keeps the folder's layout
(`labels.csv` and the CSVs beside it, the same file names, 16-bit FLAC), so issue 21's detector
metric runs on it unchanged and its figures sit beside the original's. The filter is
`training.lowpass` (the one `soundmon train --distill-lowpass` trains with), order 2 by default:
12 dB per octave past the cutoff.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import soundfile as sf

from training.lowpass import lowpass

__all__ = ["lowpass_recordings"]


def lowpass_recordings(src: Path, dst: Path, cutoff_hz: float, order: int = 2) -> int:
    """Write every audio file of `src` low-passed into `dst`, with its CSVs; the number of recordings."""
    src, dst = Path(src), Path(dst)
    if not (src / "labels.csv").is_file():
        raise SystemExit(f"lowpass_recordings: {src} has no labels.csv (not a recordings folder)")
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.csv")):
        shutil.copy(f, dst / f.name)
    n = 0
    for f in sorted(src.glob("*.flac")) + sorted(src.glob("*.wav")):
        x, sr = sf.read(f, dtype="float32", always_2d=False)
        if x.ndim > 1:
            x = x.mean(axis=1)
        sf.write(dst / f.name, lowpass(x, sr, cutoff_hz, order), sr, subtype="PCM_16")
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="recordings folder with labels.csv")
    p.add_argument("dst", type=Path, help="folder for the low-passed copy")
    p.add_argument("--cutoff-hz", type=float, default=1500.0, help="cutoff frequency (default 1500)")
    p.add_argument("--order", type=int, default=2, help="filter order: 2 = 12 dB per octave (default)")
    a = p.parse_args(argv)
    n = lowpass_recordings(a.src, a.dst, a.cutoff_hz, a.order)
    print(f"wrote {n} recordings low-passed at {a.cutoff_hz:g} Hz (order {a.order}) to {a.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
