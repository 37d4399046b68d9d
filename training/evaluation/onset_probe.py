"""First-window probe: is a model confident on a sound's first half second, at a window's end?

The daemon's first window after an onset holds 0-0.5 s of the new sound at the end of 4 s of
whatever came before, and `python -m tools.latency` is decided by how often that window fires.
Its median over ~20 street-recording onsets moves by half a second with one or two onsets; this
probe asks the same question of every held-out clip: the clip's first 0.1-0.5 s (uniform) is put
at the end of a window, after digital silence or over another clip of another class (at both
clips' own levels, as a street mixes them), and the int8 model is run through the daemon's runner
and front-end. It reports how often the clip's class scores >= 0.5 and is the top class, and,
after silence, how often it scores >= 0.5 with the first 0.25, 0.5, 1 and 2 s of the clip.

Usage: `python -m training.evaluation.onset_probe --model M --dataset D --fold 1` (use a model that did not
train on that fold).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from monitor.errors import SoundmonError
from monitor.frontend import LogMelFrontend
from monitor.runner import open_model
from training.datasets import load_audio, read_dataset
from training.evaluation.clip_accuracy import check_labels

__all__ = ["first_window_rates", "main"]

VISIBLE_SECONDS = (0.25, 0.5, 1.0, 2.0)


def _probe_plan(labels: np.ndarray, rng: np.random.Generator, sample_rate: int) -> list[tuple[int, int, int]]:
    """(clip, visible samples, context clip of another class) for every clip; seeded."""
    plan = []
    for i in range(len(labels)):
        visible = int(rng.uniform(0.1, 0.5) * sample_rate)
        others = np.flatnonzero(labels != labels[i])
        j = int(rng.choice(others)) if len(others) else i
        plan.append((i, visible, j))
    return plan


def first_window_rates(model: Path, dataset: Path, fold: int | None = None, seed: int = 0) -> dict:
    """Share of clips whose class scores >= 0.5 / is the top class, after silence and over another clip."""
    bundle, runner = open_model(model, 1)
    ds = read_dataset(dataset)
    check_labels(ds, bundle, model)
    clips = [c for c in ds.clips if fold is None or c.fold == fold]
    if not clips:
        raise SystemExit(f"onset_probe: no clips in fold {fold} of {dataset}")
    p = bundle.frontend
    audio = [load_audio(c.path, p.sample_rate) for c in clips]
    labels = np.array([bundle.labels.index(c.label) for c in clips])
    n = (bundle.window_frames - 1) * p.hop_length + p.frame_span  # samples of one window
    frontend = LogMelFrontend(p)

    def scores(start: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
        """The model's scores for `start` at the end of a window, over `context` (looped) or silence."""
        window = np.zeros(n, np.float32)
        if context is not None:
            window += np.tile(context, -(-n // max(len(context), 1)))[:n]
        start = start[-n:]
        window[n - len(start) :] += start
        return runner.predict(frontend(window))

    plan = _probe_plan(labels, np.random.default_rng(seed), p.sample_rate)
    out: dict = {"model": bundle.name, "clips": len(clips)}
    for condition in ("after_silence", "over_another_sound"):
        confident, top = 0, 0
        for i, visible, j in plan:
            s = scores(audio[i][:visible], audio[j] if condition == "over_another_sound" else None)
            confident += int(s[labels[i]] >= 0.5)
            top += int(s.argmax() == labels[i])
        out[condition] = {"confident": round(confident / len(plan), 3), "top_class": round(top / len(plan), 3)}
    # After silence with fixed visible lengths: how much of a sound the model needs.
    out["confident_after_silence_by_seconds"] = {
        seconds: round(
            float(np.mean([scores(a[: int(seconds * p.sample_rate)])[k] >= 0.5 for a, k in zip(audio, labels, strict=True)])), 3
        )
        for seconds in VISIBLE_SECONDS
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.evaluation.onset_probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--fold", type=int, default=None, help="only this fold's clips (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        r = first_window_rates(args.model, args.dataset, args.fold, args.seed)
    except SoundmonError as exc:  # a bad model or dataset path: one line, not a traceback
        print(f"onset_probe: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{r['model']}: {r['clips']} clips, first 0.1-0.5 s at the end of a window")
    for condition in ("after_silence", "over_another_sound"):
        c = r[condition]
        print(f"  {condition.replace('_', ' '):<20} class >= 0.5: {c['confident']:.1%}   top class: {c['top_class']:.1%}")
    shown = "  ".join(f"{k:g} s: {v:.1%}" for k, v in r["confident_after_silence_by_seconds"].items())
    print(f"  after silence, class >= 0.5 with the first {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
