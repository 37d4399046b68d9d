"""Dataset readers: UrbanSound8K, ESC-50 and a folder per class, into one list of labelled clips.

Every reader returns a `Dataset`: the clips that exist on disk (path, label, fold, group), the
label list, and the files the metadata lists but that are missing (counted and reported, never
fatal). `group` is the source recording (Freesound ID for the two public sets and for files
named as they name them; for other folders `groups.csv`, a sub-folder or the stem without a
clip counter), so splits never put clips of one recording on both sides.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from monitor.errors import AudioFileError, SoundmonError
from monitor.resample import resample, to_mono

__all__ = [
    "AUDIO_EXTENSIONS",
    "URBAN10_LABELS",
    "Clip",
    "Dataset",
    "DatasetError",
    "GROUPS_FILE",
    "detect_format",
    "group_of_stem",
    "load_audio",
    "parse_classes",
    "parse_renames",
    "read_dataset",
    "read_esc50",
    "read_folders",
    "read_urbansound8k",
]

URBAN10_LABELS = [
    "air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling",
    "engine_idling", "gun_shot", "jackhammer", "siren", "street_music",
]  # fmt: skip

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


class DatasetError(SoundmonError):
    """The dataset path or its metadata cannot be used."""

    exit_code = 2


@dataclass(frozen=True)
class Clip:
    """One labelled audio file of a dataset: `path`, `label` (one of the dataset's labels),
    `fold` (its cross-validation fold number) and `group` (its source recording)."""

    path: Path
    label: str
    fold: int
    group: str  # source recording: clips of one group always stay on one side of a split


@dataclass
class Dataset:
    """What every reader returns: one list of labelled clips, whatever the source's layout.

    `name` (for reports), `root` (the dataset's folder), `format` ("urbansound8k", "esc50" or
    "folders"), `labels` (the class names; a label's index is its model output), `clips` (the
    files that exist), `missing` and `split` as commented below.
    """

    name: str
    root: Path
    format: str
    labels: list[str]
    clips: list[Clip]
    missing: list[str] = field(default_factory=list)  # files listed in the metadata but absent
    # How the folds were made: "official" (the set's own folds, which keep a source recording in
    # one fold), "fold folders" (the user's foldN/ folders, as given) or "by recording" (assigned
    # per source recording by `read_folders`); the model card says which.
    split: str = "official"

    @property
    def folds(self) -> list[int]:
        """The fold numbers that have clips, ascending."""
        return sorted({c.fold for c in self.clips})

    def label_index(self, clip: Clip) -> int:
        """`clip`'s class index in `labels`."""
        return self.labels.index(clip.label)

    def y(self, clips: list[Clip] | None = None) -> np.ndarray:
        """Class indices (int64) of `clips` (default: all clips), in their order."""
        lookup = {name: i for i, name in enumerate(self.labels)}
        return np.array(
            [lookup[c.label] for c in (self.clips if clips is None else clips)], dtype=np.int64
        )

    def select_folds(self, folds) -> list[Clip]:
        """The clips whose fold is in `folds` (fold numbers), in dataset order."""
        folds = set(int(f) for f in folds)
        return [c for c in self.clips if c.fold in folds]

    def split_info(self) -> dict:
        """How the folds were made and how many source recordings the clips come from (for the
        report and the model card's limits)."""
        folds_of: dict[str, set[int]] = {}
        for c in self.clips:
            folds_of.setdefault(c.group, set()).add(c.fold)
        split = sum(1 for f in folds_of.values() if len(f) > 1)
        return {"rule": self.split, "recordings": len(folds_of), "recordings_in_several_folds": split}

    def summary(self) -> str:
        """One line for the console: clips, classes, clips per fold, missing files, and a
        warning when user fold folders split a source recording."""
        per_fold = Counter(c.fold for c in self.clips)
        folds = ", ".join(f"{f}: {n}" for f, n in sorted(per_fold.items()))
        text = f"{self.name} ({self.format}): {len(self.clips)} clips, {len(self.labels)} classes; folds {folds}"
        if self.missing:
            text += f"; {len(self.missing)} listed file(s) missing (skipped)"
        if self.split == "fold folders":
            n = self.split_info()["recordings_in_several_folds"]
            if n:
                text += (f"; warning: {n} source recording(s) have clips in more than one fold folder, "
                         "so held-out figures are optimistic")  # fmt: skip
        return text


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Read any soundfile-readable file as mono float32 at `sample_rate` (soxr resampling)."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioFileError(f"cannot read audio file {path}: {exc}") from None
    return resample(to_mono(data), int(rate), sample_rate)


def parse_classes(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if len(set(names)) != len(names):
        raise DatasetError(f"--classes lists a class twice: {text}")
    return names


def parse_renames(items) -> dict[str, str]:
    """['dog=dog_bark', 'a=b,c=d'] -> {'dog': 'dog_bark', ...}."""
    out: dict[str, str] = {}
    for item in items or []:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise DatasetError(f"--rename wants OLD=NEW, got {part!r}")
            old, new = (s.strip() for s in part.split("=", 1))
            if not old or not new:
                raise DatasetError(f"--rename wants OLD=NEW, got {part!r}")
            out[old] = new
    return out


def _finish(
    name: str,
    root: Path,
    fmt: str,
    rows: list[tuple[Path, str, int, str]],
    classes: list[str] | None,
    renames: dict[str, str] | None,
    folds,
    label_order: list[str] | None = None,
) -> Dataset:
    """Rename, choose classes and folds, split present from missing files."""
    renames = renames or {}
    renamed = [(p, renames.get(lab, lab), f, g) for p, lab, f, g in rows]
    available = sorted({lab for _, lab, _, _ in renamed})
    if classes:
        unknown = [c for c in classes if c not in available]
        if unknown:
            raise DatasetError(f"{root}: unknown class(es) {unknown}; the dataset has {available}")
        labels = list(classes)
    elif label_order:
        ordered = [renames.get(x, x) for x in label_order]
        labels = [x for x in dict.fromkeys(ordered) if x in available]
    else:
        labels = available
    keep_folds = {int(f) for f in folds} if folds else None
    clips, missing = [], []
    for p, lab, f, g in renamed:
        if lab not in labels or (keep_folds is not None and f not in keep_folds):
            continue
        if p.is_file():
            clips.append(Clip(p, lab, int(f), g))
        else:
            missing.append(str(p))
    if keep_folds is not None:
        absent = sorted(keep_folds - {c.fold for c in clips})
        if absent:
            raise DatasetError(f"{root}: no clips in fold(s) {absent}")
    if not clips:
        raise DatasetError(f"{root}: no audio files found for the chosen classes and folds")
    return Dataset(name, root, fmt, labels, clips, missing)


def _read_csv(path: Path, required: list[str]) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            lacking = [c for c in required if c not in header]
            if lacking:
                raise DatasetError(f"{path}: missing column(s) {lacking}")
            return list(reader)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None


def _us8k_paths(root: Path) -> tuple[Path, Path]:
    """(metadata csv, audio dir): the official layout or a flat one (metadata.csv + foldN/)."""
    official = root / "metadata" / "UrbanSound8K.csv"
    if official.is_file():
        return official, root / "audio"
    flat = root / "metadata.csv"
    if flat.is_file():
        return flat, root
    raise DatasetError(f"{root}: not an UrbanSound8K layout (no metadata/UrbanSound8K.csv)")


def read_urbansound8k(root, classes=None, renames=None, folds=None) -> Dataset:
    root = Path(root)
    meta, audio_dir = _us8k_paths(root)
    rows_in = _read_csv(meta, ["slice_file_name", "fsID", "fold", "classID", "class"])
    rows, order = [], {}
    for r in rows_in:
        fold = int(r["fold"])
        order[r["class"]] = int(r["classID"])
        rows.append(
            (audio_dir / f"fold{fold}" / r["slice_file_name"], r["class"], fold, f"fs{r['fsID']}")
        )
    label_order = sorted(order, key=order.get)
    return _finish("UrbanSound8K", root, "urbansound8k", rows, classes, renames, folds, label_order)


def read_esc50(root, classes=None, renames=None, folds=None) -> Dataset:
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise DatasetError(f"{root}: not an ESC-50 layout (no meta/esc50.csv)")
    rows_in = _read_csv(meta, ["filename", "fold", "target", "category"])
    rows, order = [], {}
    for r in rows_in:
        order[r["category"]] = int(r["target"])
        group = f"fs{r['src_file']}" if r.get("src_file") else Path(r["filename"]).stem
        rows.append((root / "audio" / r["filename"], r["category"], int(r["fold"]), group))
    label_order = sorted(order, key=order.get)
    return _finish("ESC-50", root, "esc50", rows, classes, renames, folds, label_order)


_FOLD_DIR = re.compile(r"^fold[_-]?(\d+)$", re.IGNORECASE)
_CLIP_SUFFIX = re.compile(r"([_\-.](part|clip|slice|seg|cut)?[_\-.]?\d+)+$", re.IGNORECASE)
# The two public sets' file names carry their Freesound source recording (the official folds
# group by it): ESC-50 `{fold}-{freesoundID}-{take}-{class}` (takes A, B, C... are cut from one
# recording) and UrbanSound8K `{fsID}-{classID}-{occurrenceID}-{sliceID}`.
# Kept as narrow as the sets name them (fold 1-5, one take letter, class 0-49; classID 0-9), so
# a date-like name of one's own (`2024-05-01-3`) is not taken for one.
_ESC50_NAME = re.compile(r"^[1-5]-(\d+)-[A-Z]-\d{1,2}$")
_US8K_NAME = re.compile(r"^(\d+)-\d-\d+-\d+$")
GROUPS_FILE = "groups.csv"  # optional `file,group` rows at the root: the user names the recording


def _fold_of_group(group: str, n_folds: int) -> int:
    digest = hashlib.sha1(group.encode()).digest()
    return 1 + int.from_bytes(digest[:4], "big") % n_folds


def group_of_stem(class_name: str, stem: str) -> str:
    """The source recording of a loose file `<class>/<stem>.<ext>`, from its name.

    ESC-50 and UrbanSound8K names give the Freesound recording (`fs<ID>`, the same group in
    every class folder, as the official folds have it); any other name is the stem minus a
    trailing clip counter (`rec7_3` -> `<class>/rec7`), so clips cut from one recording and
    numbered stay together. A name that is all counter keeps its full stem.
    """
    m = _ESC50_NAME.match(stem) or _US8K_NAME.match(stem)
    if m:
        return f"fs{m.group(1)}"
    return f"{class_name}/{_CLIP_SUFFIX.sub('', stem) or stem}"


def _read_groups_file(root: Path) -> dict[Path, str]:
    """`root/groups.csv` (columns `file,group`; file relative to root) as {resolved path: group}.

    For recordings whose names follow no rule above: the user names each file's recording. A
    listed file that is not there is an error (a typo would silently split a recording)."""
    path = root / GROUPS_FILE
    if not path.is_file():
        return {}
    out: dict[Path, str] = {}
    for row in _read_csv(path, ["file", "group"]):
        rel, group = (row.get("file") or "").strip(), (row.get("group") or "").strip()
        if not rel or not group:
            raise DatasetError(f"{path}: every row needs a file and a group (got {rel!r}, {group!r})")
        file = root / rel
        if not file.is_file():
            raise DatasetError(f"{path}: {rel} is not a file under {root}")
        out[file.absolute()] = f"user:{group}"
    return out


def read_folders(root, classes=None, renames=None, folds=None, n_folds: int = 5) -> Dataset:
    """`root/<class>/[foldN/]<files>`; without fold folders, folds are assigned per source recording.

    A clip's recording (its group) is, first match wins: the row of `root/groups.csv`
    (`file,group`) that lists it; its sub-folder `root/<class>/<recording>/`; the Freesound ID
    in an ESC-50 or UrbanSound8K file name; else its stem minus a trailing clip counter
    (`rec7_3.wav` -> `rec7`). Groups map to folds by a hash, so the split is stable and never
    separates clips of one recording.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"{root}: no class folders (expected <root>/<class>/<audio files>)")
    named = _read_groups_file(root)
    rows = []
    for cdir in class_dirs:
        for p in sorted(cdir.rglob("*")):
            if not p.is_file() or p.suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            rel = p.relative_to(cdir).parts
            fold = None
            sub = list(rel[:-1])
            if sub and _FOLD_DIR.match(sub[0]):
                fold = int(_FOLD_DIR.match(sub[0]).group(1))
                sub = sub[1:]
            if p.absolute() in named:
                group = named[p.absolute()]
            elif sub:
                group = f"{cdir.name}/{'/'.join(sub)}"
            else:
                group = group_of_stem(cdir.name, p.stem)
            rows.append([p, cdir.name, fold, group])
    if not rows:
        raise DatasetError(
            f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in the class folders"
        )
    explicit = [r for r in rows if r[2] is not None]
    if explicit and len(explicit) != len(rows):
        raise DatasetError(f"{root}: some class folders use foldN sub-folders and some do not")
    if not explicit:
        groups = sorted({r[3] for r in rows})
        k = max(2, min(n_folds, len(groups)))
        for r in rows:
            r[2] = _fold_of_group(r[3], k)
    rows_t = [(p, lab, int(f), g) for p, lab, f, g in rows]
    ds = _finish(root.name, root, "folders", rows_t, classes, renames, folds)
    ds.split = "fold folders" if explicit else "by recording"
    return ds


def detect_format(root) -> str:
    root = Path(root)
    if (root / "metadata" / "UrbanSound8K.csv").is_file() or (root / "metadata.csv").is_file():
        return "urbansound8k"
    if (root / "meta" / "esc50.csv").is_file():
        return "esc50"
    if root.is_dir():
        return "folders"
    raise DatasetError(f"dataset {root} not found")


def read_dataset(root, fmt: str | None = None, classes=None, renames=None, folds=None) -> Dataset:
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset {root} not found")
    fmt = fmt or detect_format(root)
    readers = {"urbansound8k": read_urbansound8k, "esc50": read_esc50, "folders": read_folders}
    if fmt not in readers:
        raise DatasetError(f"unknown dataset format {fmt!r}; use one of {sorted(readers)}")
    return readers[fmt](root, classes=classes, renames=renames, folds=folds)
