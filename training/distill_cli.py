"""The `--teacher` options of `soundmon train` (argparse only: building the parser imports no
TensorFlow; the training itself is `training.distill`)."""

from __future__ import annotations

import argparse

__all__ = ["add_distill_args"]


def add_distill_args(p: argparse.ArgumentParser) -> None:
    """The distillation option group of `soundmon train`."""
    d = p.add_argument_group("distillation (--teacher, training/distill.py)")
    d.add_argument("--teacher", metavar="BUNDLE",
                   help="train the CNN on this window model's scores as well as the labels (e.g. models/urban10_yamnet)")  # fmt: skip
    d.add_argument("--teacher-folds", metavar="DIR",
                   help="fold<k> teacher bundles for --cv, each never trained on fold k (default: <teacher>_cv)")  # fmt: skip
    d.add_argument("--distill-alpha", type=float, default=0.3,
                   help="weight of the label loss; the teacher gets 1 - alpha (default 0.3)")  # fmt: skip
    d.add_argument("--temperature", type=float, default=2.0, help="distillation temperature (default 2)")
    d.add_argument("--distill-copies", type=int, default=4,
                   help="augmented waveforms per training source, scored by the teacher (default 4)")  # fmt: skip
    d.add_argument("--distill-lowpass", type=float, default=0.0, metavar="P",
                   help="probability that a copy is heard through a low-pass filter (a closed window, a wall, "
                   "distance: order 2 or 4, cutoff 0.8-5 kHz); teacher and student hear the same copy (default 0)")  # fmt: skip
    d.add_argument("--no-background", action="store_true",
                   help="no 11th 'background' output (extra audio then trains through the teacher only)")  # fmt: skip
    d.add_argument("--extra-esc50", metavar="DIR",
                   help="ESC-50 root whose ESC-10 clips join the training sources (dog -> dog_bark, the rest background)")  # fmt: skip
    d.add_argument("--extra-recordings", metavar="DIR",
                   help="recordings folder with labels.csv: 4 s stretches of the recordings whose fold the "
                   "dataset trains on join the sources (labelled spans with their class, unlabelled ones as background)")  # fmt: skip
    d.add_argument("--student-masks", metavar="TIME,FREQ", default="2,2",
                   help="SpecAugment time and frequency masks on the student's batches (the teacher hears every copy "
                   "unmasked; 0,0 = student and teacher hear the same audio); default 2,2")  # fmt: skip
