"""The model card (markdown): data, licence, cost, accuracy tables and pictures."""

from __future__ import annotations

from pathlib import Path

from training.evaluation.reports import per_class_table

__all__ = ["limits_lines", "reused_body", "write_card"]

LICENCES = {
    "urbansound8k": (
        'UrbanSound8K (J. Salamon, C. Jacoby and J. P. Bello, "A Dataset and Taxonomy for Urban Sound '
        'Research", ACM MM 2014) is licensed CC BY-NC 3.0; its clips are excerpts of Freesound recordings '
        "(authors in the dataset's FREESOUNDCREDITS.txt). **This model is derived from it and inherits the "
        "non-commercial condition: CC BY-NC 3.0, non-commercial use only, with attribution.**"
    ),
    "esc50": (
        "ESC-50 (K. J. Piczak, ACM MM 2015) is CC BY-NC 3.0 (the ESC-10 subset CC BY 3.0); per-clip "
        "attribution is in the dataset's LICENSE file. A model trained on it inherits its licence."
    ),
    "folders": "Your own recordings: the licence is yours to state.",
}

# The licence a body reused by `--init-from` carries into the new model, by the format of the
# data that body was trained on (the bundle's JSON "data"). The weights are a derived work of
# that data whatever the licence of the recordings the new head is fitted on.
BODY_LICENCES = {
    "urbansound8k": (
        "The reused body (`{bundle}`) was trained on UrbanSound8K (CC BY-NC 3.0; J. Salamon, C. Jacoby and "
        "J. P. Bello, ACM MM 2014): **this model is derived from it and inherits the non-commercial condition: "
        "CC BY-NC 3.0, non-commercial use only, with attribution**, whatever the licence of the data above."
    ),
    "esc50": (
        "The reused body (`{bundle}`) was trained on ESC-50 (K. J. Piczak, CC BY-NC 3.0; the ESC-10 subset "
        "CC BY 3.0): this model is derived from it and inherits its licence."
    ),
}


def reused_body(init_from: str | Path | None, bundle) -> dict | None:
    """What `--init-from` reused, for the report and card: the bundle, its architecture and the
    data its body learnt from (which decides the licence the body carries into the new model)."""
    if not init_from or bundle is None:
        return None
    data = bundle.meta.get("data") or {}
    return {
        "bundle": str(init_from),
        "arch": (bundle.meta.get("model") or {}).get("arch"),
        "data_name": data.get("name"),
        "data_format": data.get("format"),
        "data_folds": data.get("folds"),
    }


def _body_of(init_from: str | None) -> dict | None:
    """`reused_body` for a report written before it kept one: read from the bundle if it is there."""
    if not init_from:
        return None
    from monitor.bundle import load_bundle
    from monitor.errors import BundleError

    try:
        return reused_body(init_from, load_bundle(init_from))
    except BundleError:
        return {"bundle": str(init_from)}


def _body_licence(body: dict) -> str:
    text = BODY_LICENCES.get(body.get("data_format") or "")
    if text:
        return text.format(bundle=body["bundle"])
    data = body.get("data_name") or "data its bundle does not name"
    return (f"The reused body (`{body['bundle']}`) was trained on {data}: this model is derived from it and "
            "inherits that data's licence.")  # fmt: skip


def _split_line(d: dict) -> str:
    """What the held-out figures can and cannot promise, from how this dataset's folds were made."""
    fmt = d.get("format")
    split = d.get("split") or {}
    if fmt == "urbansound8k":
        return ("Held-out folds share no clips and (apart from the few Freesound IDs that the official metadata "
                "puts in two folds with different classes) no source recordings with the training folds.")  # fmt: skip
    if fmt == "esc50":
        return ("Held-out folds are ESC-50's official folds, which keep every take of a Freesound recording in one "
                "fold: no source recording is on both sides of a split.")  # fmt: skip
    if split.get("rule") == "fold folders":
        n = split.get("recordings_in_several_folds")
        found = ("" if n is None else f" By groups.csv, sub-folders and the file-name rules, {n} of its "
                 f"{split.get('recordings')} source recordings have clips in more than one fold.")  # fmt: skip
        return ("The folds are the dataset's foldN/ folders as given; where they split the clips of one recording, "
                f"the held-out figures are optimistic.{found}")  # fmt: skip
    if split.get("rule") == "by recording":
        return (f"The folds were assigned per source recording ({split.get('recordings')} recordings among "
                f"{d.get('n_clips')} clips), each recording told by groups.csv, its sub-folder, the Freesound ID of "
                "an ESC-50 or UrbanSound8K file name, or the file name without a trailing clip counter. Clips of one "
                "recording that none of these ties together count as separate recordings and may land in different "
                "folds, which makes the held-out figures optimistic.")  # fmt: skip
    return "Held-out folds share no clips with the training folds."


def limits_lines(r: dict, kind: str = "CNN") -> list[str]:
    """The card's "Limits": what this model's data and splits support, not a fixed text.

    Dataset-specific: how the held-out folds were made (`_split_line`) and, for a small set, how
    far one clip and one seed move the figures (issue #20: on ESC-10 the CV and the held-out fold
    ranked `--init-from` and training from scratch in opposite orders)."""
    d = r["data"]
    n_labels = len(r["labels"])
    lines = [
        "## Limits",
        "",
        f"- Trained on short, labelled clips of {n_labels} classes; anything else is forced into one of them "
        "(softmax). Use per-class thresholds and the detector's smoothing against false alarms.",
        f"- {_split_line(d)} Recordings from another place or another microphone differ from these: expect "
        "lower accuracy there.",
    ]
    per_fold = [int(v) for v in (d.get("clips_per_fold") or {}).values()]
    if d.get("n_clips", 0) < 1000 and per_fold:
        smallest = min(per_fold)
        lines.append(
            f"- A small set ({d['n_clips']} clips): one clip of the smallest fold ({smallest}) is "
            f"{100 / max(smallest, 1):.1f} points of its accuracy, and a training with another `--seed` moves the "
            "figures by a few points. Compare recipes on the same held-out clips over several seeds, not on one "
            "cross-validation run."
        )
    lines.append("")
    return lines


ARCH_TEXT = {
    "cnn_spn_s23t1": " (convolutions with batch norm and ReLU, never padded along time: a 5 x 3 patch stem of 24 "
    "channels strided 5 in time, 1 x 2 pooling, 32 channels (3 x 3), 5 x 2 pooling, 2 x 64 channels, 1 x 2 "
    "pooling, 2 x 128 channels, the last two stages 1 x 3 (they mix only frequency: each of the 15 head time "
    "steps sees 1.35 s of the window); every strided layer aligned to the window's newest frame; mean over "
    "frequency, then the mean and the max over the window and the mean over its newest second, into one dense "
    "softmax layer; time strides 5 and 25 frames, so it can stream one hop at a time)",
    "sbcnn": " (Salamon & Bello 2017, the plain-CNN yardstick: frames averaged in threes, unpadded 5x5 "
    "convolutions of 24, 48 and 48 channels with ReLU and 2 x 2 max pooling, dropout 0.5 before dense 64 and "
    "before the dense softmax; the dropout setting below does not apply to it)",
}


def stream_lines(r: dict) -> list[str]:
    """The card's line about the streaming model: what it costs when the bundle carries one, why
    not when training left a streaming body's one out (`report["stream_left_out"]`)."""
    st = r.get("stream")
    if st:
        fe = r.get("frontend", {})
        hop_s = st.get("hop_frames", 50) * fe.get("hop_length", 160) / fe.get("sample_rate", 16000)
        runs = ("what the daemon runs at its default 0.5 s hop" if hop_s == 0.5 else
                f"steps by {hop_s:g} s: the daemon checks a start model at each window and half a hop after it")  # fmt: skip
        return [
            f"- Streaming model (`{r['name']}.stream.tflite`, {runs}): "
            f"{st['macs_per_hop'] / 1e6:.1f} M multiply-accumulates per hop, {st['median_ms']:.3f} ms per hop median "
            f"({st['p95_ms']:.3f} ms p95), `StreamingRunner(bundle, num_threads=1).predict` over {st['calls']} "
            "consecutive windows on the same machine; its scores equal the window model's to int8 rounding."
        ]
    if r.get("stream_left_out"):
        return [
            "- No streaming model in this bundle: the int8 export quantised one of its states differently as "
            "input and output, which the streaming runner refuses, so training left it out; the daemon runs the "
            "whole window every hop."
        ]
    return []


def _augment_text(a: dict) -> str:
    """The augmentation line of the card: only the parts that were switched on."""
    if not a.get("enabled", True):
        return "- Augmentation: none (evaluation placement only)."
    parts = []
    if a["time_shift"]:
        parts.append("random placement of the clip in the window (time shift)")
    if a["gain_db"]:
        parts.append(f"gain +-{a['gain_db']} dB")
    if a["p_mix"]:
        m0, m1 = a["mix_snr_db"]
        parts.append(f"mixing with another clip at {m0}-{m1} dB SNR (energy-weighted soft labels)")
    if a["p_background"]:
        b0, b1 = a["background_snr_db"]
        parts.append(f"a synthetic coloured noise floor at {b0}-{b1} dB SNR")
    if a["p_stretch"]:
        parts.append(f"time stretch {a['stretch'][0]}-{a['stretch'][1]} (spectrogram domain)")
    if a["p_pitch"]:
        parts.append(f"pitch shift +-{a['pitch_bands']} mel bands (spectrogram domain)")
    if a.get("p_eq"):
        parts.append(f"a random equaliser curve up to {a['eq_db']} dB")
    if a["time_masks"] or a["freq_masks"]:
        parts.append(
            f"SpecAugment masks ({a['time_masks']} x {a['time_mask_frames']} frames, "
            f"{a['freq_masks']} x {a['freq_mask_bands']} bands)"
        )
    if not parts:
        return "- Augmentation: none (evaluation placement only)."
    return "- Augmentation (on the fly, on cached log-mel): " + ", ".join(parts) + "."


def _init_lines(body: dict, t: dict, cv: bool) -> list[str]:
    """How `--init-from` trained: which body, what was frozen for how long and at which rates
    (training.train.train_cnn: the head alone at lr, then everything at 0.3 lr)."""
    frozen = min(int(t.get("freeze_body_epochs") or 0), int(t["epochs"]))
    trained_on = body.get("data_name") or "data its bundle does not name"
    if body.get("data_folds"):
        trained_on += f" folds {body['data_folds']}"
    text = (f"- Started from the convolutional body of `{body['bundle']}` ({body.get('arch')}, trained on "
            f"{trained_on}) and its input normalisation; a new head for these labels.")  # fmt: skip
    rest = int(t["epochs"]) - frozen
    if frozen and rest:
        text += (f" The body stayed frozen for the first {frozen} epochs (the head alone, lr {t['lr']}), then the "
                 f"whole network trained for {rest} epochs at lr {0.3 * t['lr']:.2g}.")  # fmt: skip
    elif frozen:
        text += f" The body stayed frozen for all {frozen} epochs: only the head trained (lr {t['lr']})."
    else:
        text += f" The whole network trained from the first epoch at lr {t['lr']}."
    lines = [text]
    if cv:
        lines.append(f"- Each CV fold k started from `{body['bundle']}_cv/fold<k>` where that bundle kept it (a body "
                     "that never heard fold k of its own data), else from the bundle itself; training logged a "
                     "warning for any fold whose held-out clips the body had heard.")  # fmt: skip
    return lines


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _smoothing_lines(r: dict) -> list[str]:
    """The detector calibration written into the bundle (`soundmon train --class-smoothing`)."""
    own = (r.get("training") or {}).get("class_smoothing") or {}
    if not own:
        return []
    by_n: dict[int, list[str]] = {}
    for label, n in sorted(own.items()):
        by_n.setdefault(n, []).append(f"`{label}`")
    parts = "; ".join(f"{n} windows for {', '.join(labels)}" for n, labels in sorted(by_n.items()))
    return [f"- Detection default it is calibrated for (its JSON's `detection.class_smoothing_windows`): {parts}; "
            "the config's `detection.smoothing_windows` (3) for the other labels. A config that sets a smoothing "
            "(for every label or for one) overrides it."]


def _start_model_lines(r: dict) -> list[str]:
    """Fast start's start model named in the bundle, and its weight in each window's score
    (`python -m training.attach_start --start-weight`)."""
    start = r.get("start_model")
    if not start:
        return []
    weight = start.get("weight") or 0.0
    threshold = start.get("threshold")
    return ["- Start model (fast start, `detection.fast_start_threshold`"
            + (f", {threshold:g} by its JSON" if threshold is not None else "") + f"): `{start['name']}`, a classifier of the same "
            "labels on a shorter window" + (f"; each window's score the detector counts is {1 - weight:g} x this model's + {weight:g} x the "
                        "start model's on the window's newest part (its JSON's `detection.start_model_weight`)"
                        if weight else "") + "."]  # fmt: skip


def _distill_lines(d: dict, seconds: float = 4.0) -> list[str]:
    """How a distilled run (`soundmon train --teacher`, training/distill.py) trained: teacher, loss, sources,
    augmentation; `seconds`, the training window (each copy is one window long)."""
    folds = sorted(k for k in d.get("teachers", {}) if k != "final")
    extra = [f"ESC-10 clips of `{d['esc50']}`" if d.get("esc50") else "",
             f"4 s stretches of the seen recordings of `{d['recordings']}`" if d.get("recordings") else ""]  # fmt: skip
    extra_text = ", ".join(e for e in extra if e)
    lines = [
        f"- Distilled from the teacher `{d['teacher']}`"
        + (f" (each CV fold from the teacher's bundle that never heard it: {', '.join(folds)})" if folds else "")
        + f": loss = {d['alpha']:g} x label cross-entropy + {1 - d['alpha']:g} x T^2 x KL(teacher || student) at "
        f"temperature T = {d['temperature']:g}.",
        f"- {d['sources']} sources ({d['dataset_clips']} dataset clips"
        + (f", {extra_text}" if extra_text else "")
        + f"), {d['copies']} augmented {seconds:g} s copies of each, the teacher scoring the very audio the student hears.",
        f"- Copies: {d['p_start']:.0%} from the clip's start, {d['p_onset']:.0%} with only an onset of at least "
        f"{d['onset_min_seconds']:g} s at the window's end, gain within +/-{d['gain_db']:g} dB, {d['p_mix']:.0%} mixed "
        f"with another source at {d['mix_snr_db'][0]:g}-{d['mix_snr_db'][1]:g} dB SNR, {d['p_noise']:.0%} with noise at "
        f"{d['noise_snr_db'][0]:g}-{d['noise_snr_db'][1]:g} dB, {d['p_speed']:.0%} resampled x{d['speed'][0]:g}-"
        f"{d['speed'][1]:g}; the student's batches also get {d['time_masks']} time and {d['freq_masks']} frequency masks.",
    ]
    if d.get("background"):
        lines.append("- An 11th output, `background`, learns the audio that is none of the classes (ESC-10's other "
                     "classes, the recordings' unlabelled stretches); the bundle's `watch` list leaves it out of "
                     "what the daemon reports. CV accuracy is over the 10 classes' outputs.")  # fmt: skip
    return lines


def write_card(path: str | Path, report: dict) -> None:
    """`report` is the training report (the same dict that goes to metrics.json)."""
    r = report
    name = r["name"]
    lines = [f"# Model card: `{name}`", ""]
    lines += [
        r.get("summary", f"Small int8 CNN that labels {r.get('window_seconds', 4.0):g} s log-mel windows of sound."),
        "",
        "## What it is",
        "",
        f"- Labels ({len(r['labels'])}): " + ", ".join(f"`{x}`" for x in r["labels"]),
        f"- Input: {r['window_seconds']} s window = {r['window_frames']} frames x {r['frontend']['n_mels']} mel bands "
        "of `monitor.frontend.LogMelFrontend` (16 kHz, 25 ms Hann / 512-point FFT, 10 ms frame step, fixed dB reference), "
        f"normalised as (dB - ({r['norm'][0]:.2f})) / {r['norm'][1]:.2f}, quantised to int8.",
        "- Output: softmax probabilities (int8, dequantised by `monitor.runner.ModelRunner`).",
        "- Clips shorter than the window are zero-padded at the end (placement `start`); longer recordings "
        "give a window every 0.5 s and a clip's score is the mean of its window scores (what "
        "`soundmon classify` does).",
        *_smoothing_lines(r),
        *_start_model_lines(r),
        f"- Architecture `{r['arch']}`{ARCH_TEXT.get(r['arch'], '')}: {r['model']['params']:,} parameters, "
        f"{r['model']['macs_per_window'] / 1e6:.1f} M multiply-accumulates per window, "
        f"int8 file {r['model']['tflite_bytes'] / 1024:.0f} KiB.",
    ]
    lat = r.get("latency")
    if lat:
        lines.append(
            f"- Int8 latency: {lat['median_ms']:.3f} ms per window median ({lat['p95_ms']:.3f} ms p95), "
            f"`ModelRunner(bundle, num_threads=1).predict`, {lat['calls']} calls, {lat['runtime']}, on the training machine "
            "(x86-64, 2 cores). A Raspberry Pi 4 is several times slower per window."
        )
    lines += stream_lines(r)
    lines += ["", "## Training data", ""]
    d = r["data"]
    lines += [
        f"- Dataset: {d['name']} at `{d['root']}` ({d['format']}), {d['n_clips']} clips, folds {d['folds']} "
        f"({', '.join(f'fold {k}: {v}' for k, v in d['clips_per_fold'].items())}).",
        f"- Listed but missing files: {d['missing']}.",
        "- " + LICENCES.get(d["format"], LICENCES["folders"]),
    ]
    body = r.get("init_body") or _body_of(r.get("init_from"))
    if body:
        lines.append("- " + _body_licence(body))
    if d.get("notes"):
        lines += [f"- {n}" for n in d["notes"]]
    t = r["training"]
    lines += [
        "",
        "## How it was trained",
        "",
        f"- Command: `{r['command']}`",
        f"- {t['epochs']} epochs, batch {t['batch_size']}, AdamW (lr {t['lr']}, weight decay {t['weight_decay']}), "
        f"{t['warmup_epochs']} warm-up epochs then cosine decay, label smoothing {t['label_smoothing']}, dropout {t['dropout']}, seed {t['seed']}.",
    ]
    a = t["augment"] if not r.get("distill") else {}
    lines += _distill_lines(r["distill"], t.get("window_seconds", 4.0)) if r.get("distill") else [_augment_text(a)]
    if a.get("p_onset"):
        lines.append(
            f"- Onset placement in {a['p_onset']:.0%} of the training windows: only the clip's first "
            f"{a['onset_min_frames'] / 100:.1f} s or more, at the end of the window (what the daemon's newest "
            "window holds just after a sound begins), so the model answers early in a sound."
        )
    if body:
        lines += _init_lines(body, t, bool(r.get("cv")))
    if t.get("ema"):
        lines.append(
            f"- The weights kept are an exponential moving average (momentum {t['ema']}) of the training weights."
        )
    lines += [
        "- Int8: full-integer post-training quantisation, representative windows drawn from the training clips.",
    ]
    cost = r.get("cost", {})
    if cost:
        lines += [
            f"- Cost: {cost.get('seconds_per_epoch', 0):.1f} s per epoch (final model, {cost.get('train_clips')} clips), "
            f"final training {cost.get('final_train_seconds', 0) / 60:.1f} min, whole command "
            f"{cost.get('total_seconds', 0) / 60:.1f} min, peak memory {cost.get('peak_rss_mb', 0):.0f} MB"
            + (
                f" per process ({cost['parallel_jobs']} trainings at once, the CV folds and the final model "
                "side by side, one thread each)"
                if cost.get("parallel_jobs", 1) > 1
                else ""
            )
            + ", on 2 CPU cores, no GPU.",
        ]
    cv = r.get("cv")
    if cv:
        lines += [
            "",
            f"## Accuracy: leave-one-fold-out cross-validation over folds {cv['folds']}",
            "",
            "Each fold is scored by a model trained on all other folds of the training data (the settings under "
            "'How it was trained'); the int8 scores come from the daemon's own runner and window rule. The fold models' "
            f"int8 bundles are kept in `{r['name']}_cv/`: `soundmon evaluate --model models/{r['name']} "
            "--dataset DIR --cv` re-scores them and prints the int8 columns of this table and of the next.",
            "",
            "| held-out fold | clips | MFCC-MLP baseline | CNN float | CNN int8 | CNN int8 macro |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for f in cv["per_fold"]:
            lines.append(
                f"| {f['fold']} | {f['n_clips']} | {_pct(f.get('mlp', {}).get('accuracy'))} | "
                f"{_pct(f['float']['accuracy'])} | {_pct(f['int8']['accuracy'])} | {_pct(f['int8']['macro_accuracy'])} |"
            )
        s = cv["summary"]
        lines += [
            f"| **mean over folds** | | {_pct(s.get('mlp_accuracy_mean'))} | **{_pct(s['float_accuracy_mean'])}** | "
            f"**{_pct(s['int8_accuracy_mean'])}** | {_pct(s['int8_macro_mean'])} |",
            f"| all held-out clips pooled | {s['n_clips']} | {_pct(s.get('mlp_pooled', {}).get('accuracy'))} | "
            f"{_pct((s.get('float_pooled') or {}).get('accuracy'))} | {_pct(s['int8_pooled']['accuracy'])} | "
            f"{_pct(s['int8_pooled']['macro_accuracy'])} |",
            "",
            "Macro accuracy = mean of the per-class accuracies. Per class (all held-out clips pooled):",
            "",
            per_class_table(
                {
                    k: v
                    for k, v in (
                        ("MLP", s.get("mlp_pooled")),
                        ("CNN float", s.get("float_pooled")),
                        ("CNN int8", s["int8_pooled"]),
                    )
                    if v
                },
                r["labels"],
            ),
            "",
        ]
        if r.get("confusion_png"):
            lines += [
                f"![confusion matrix, int8, held-out folds]({Path(r['confusion_png']).name})",
                "",
            ]
        if r.get("learning_curve_png"):
            lines += [f"![learning curves]({Path(r['learning_curve_png']).name})", ""]
    st = r.get("streaming")
    if st:

        def acc(x):
            return "-" if x is None else f"{100 * x:.1f}%"

        lines += [
            "## Streaming check on full recordings",
            "",
            f"`{st['recordings_dir']}`: {st['all']['recordings']} full-length Freesound recordings with "
            "located labels, run through the daemon's window rule (4 s windows every "
            f"{st['hop_seconds']} s) and the int8 runner. A window counts when at least half of it lies in a "
            "labelled occurrence (or holds at least half of a shorter one); it is right when its top label is that occurrence's class.",
            "",
            "| recordings | n | labelled windows | window accuracy | mean per recording |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, name in (
            ("unseen", "folds 5-9 (never heard in training)"),
            ("seen", "folds 1-4 (their clips were training data)"),
            ("all", "all"),
        ):
            a = st[key]
            lines.append(
                f"| {name} | {a['recordings']} | {a['windows']} | {acc(a['window_accuracy'])} | "
                f"{acc(a['mean_recording_accuracy'])} |"
            )
        lines.append("")
    if r.get("detector_comparison"):
        lines += ["## Detector on street recordings, against other models", "", r["detector_comparison"], ""]
    if r.get("fast_start_alone"):
        lines += _fast_start_alone_lines(r["fast_start_alone"])
    if r.get("experiments"):
        lines += ["## What was tried", "", r["experiments"], ""]
    lines += limits_lines(r)
    Path(path).write_text("\n".join(lines))


def _fast_start_alone_lines(m: dict) -> list[str]:
    """The measurement behind the bundle's `fast_start_alone` list (`training.evaluation.fast_start_alone`)."""
    from training.evaluation.fast_start_alone import format_table

    chosen = ", ".join(m["chosen"]) or "none"
    return [
        "## Short sounds the start model may open alone",
        "",
        f"Chosen: {chosen} (`detection.fast_start_alone`). On the held-out onset streams, a candidate "
        "short sound qualifies when letting its start-model openings skip the main model's backing adds "
        f"at least {m['min_events']} events and at least {100 * m['min_precision']:.0f} % of them are right "
        "(`python -m training.evaluation.fast_start_alone --write`).",
        "",
        format_table(m["rows"], m["chosen"]),
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    """Re-render a model card from a training report: `python -m training.card REPORT.json`."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="python -m training.card", description=main.__doc__)
    p.add_argument("report", help="<name>_metrics.json written by soundmon train")
    p.add_argument("--out", help="card path (default: the bundle's .md)")
    p.add_argument("--experiments", help="markdown for the 'What was tried' section")
    p.add_argument("--streaming", help="streaming.json from soundmon evaluate --recordings")
    p.add_argument("--detector-comparison", metavar="MD",
                   help="markdown for the 'Detector on street recordings' section (python -m tools.detector_comparison)")
    args = p.parse_args(argv)
    try:
        report = json.loads(Path(args.report).read_text())
        if args.experiments:
            report["experiments"] = Path(args.experiments).read_text()
        if args.streaming:
            report["streaming"] = json.loads(Path(args.streaming).read_text())
        if args.detector_comparison:
            report["detector_comparison"] = Path(args.detector_comparison).read_text()
        bundle_json = Path(report["bundle"]["tflite"]).with_suffix(".json")
        if bundle_json.is_file():  # `python -m training.evaluation.fast_start_alone --write` measured
            data = json.loads(bundle_json.read_text())
            if data.get("fast_start_alone_measured"):
                report["fast_start_alone"] = data["fast_start_alone_measured"]
            if data.get("start_model"):  # `python -m training.attach_start`
                detection = data.get("detection") or {}
                report["start_model"] = {"name": data["start_model"],
                                         "weight": detection.get("start_model_weight", 0.0),
                                         "threshold": detection.get("fast_start_threshold")}  # fmt: skip
    except (OSError, ValueError) as exc:
        print(f"training.card: {exc}", file=sys.stderr)
        return 2
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    out = args.out or str(Path(report["bundle"]["tflite"]).with_suffix(".md"))
    write_card(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
