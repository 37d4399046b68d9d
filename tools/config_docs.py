"""Write config.yaml's comments and docs/configuration.md from monitor/config.py.

The pydantic models are the one source of the configuration's documentation: each section's
docstring (its first line is the heading) and each `Field`'s `description`, type, constraints,
default and `examples`. This module renders them twice:

- `config.yaml`: a fixed header, then every section with every key at its default, the
  description as the comment above it. Keys whose default is computed at start (`mqtt.node_id`,
  `storage.state_dir`), depends on the model (`detection.fast_start_threshold`, `hop_seconds`,
  `smoothing_windows`, `start_model_weight`) or is
  deprecated are written as comments, so the file stays the built-in defaults.
- `docs/configuration.md`: a fixed introduction, then one table per section (key, type,
  default, description) under the section's docstring.

    python -m tools.config_docs            # exit 1 and name the stale files
    python -m tools.config_docs --write    # rewrite them (`make docs`)

Edit the descriptions in monitor/config.py, not the generated files (tests/test_config_docs.py
fails when they differ from what this writes).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import textwrap
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from monitor.config import ClassConfig, Config, field_bounds

REPO = Path(__file__).resolve().parents[1]
CONFIG_YAML = REPO / "config.yaml"
REFERENCE = REPO / "docs" / "configuration.md"
SHIPPED_BUNDLE_JSON = REPO / "models" / "urban10.json"  # its labels for the class examples
COMMAND = "make docs  (or: .venv/bin/python -m tools.config_docs --write)"
WIDTH = 100  # config.yaml's line length

# Written as comments in config.yaml (the reason is in each description): a default computed at
# start (any default_factory but a section's or the classes mapping) would be frozen by writing
# it; these would change what the file means. A bundle's own value applies to the hop, the
# smoothing and the start model's weight only where the file leaves them unset (written out, 3
# windows for every label overrode `models/urban10`'s 7 for its steady sounds in every install
# that copied config.yaml to /etc/soundmon).
COMMENTED_OUT = {
    "detection.fast_start_threshold",
    "detection.hop_seconds",
    "detection.smoothing_windows",
    "detection.start_model_weight",
    "detection.window_seconds",
}

# The reference's "default" column where the default is computed at start.
COMPUTED_DEFAULT = {
    "mqtt.node_id": "the host name",
    "storage.state_dir": "`./state` or `$SOUNDMON_STATE_DIR`",
}

YAML_HEADER = """\
# soundmon configuration: the defaults, with every key and what it means.
#
# Generated from monitor/config.py by `make docs`: edit the descriptions there, not here (the
# values below are yours to change in a copy). docs/configuration.md is the same reference.
#
# Every key has a default, so you only need the ones you change (an empty file is valid).
# Unknown keys, wrong types and out-of-range values stop the daemon with one line naming the
# key and what is allowed (exit status 2). `systemctl reload soundmon` (SIGHUP) re-reads this
# file: a valid file takes effect without dropping audio; an invalid one is logged and the
# running configuration stays.
#
# YAML notes: `null` means "not set / use the automatic value"; a section or key written with
# nothing after the colon counts as empty; a key given twice is an error.
#
# Every value below is the built-in default. A key written as a comment is left unset on
# purpose (its default is computed at start, depends on the model, or the key is deprecated):
# writing it would change what the file means. The comment above it says why.
"""

# The illustration under `detection.classes:` (the shipped model's labels; test_config.py
# uncomments it and checks it against them).
CLASS_EXAMPLE = {
    "air_conditioner": ("{enabled: false}", "a steady hum nobody needs told about"),
    "gun_shot": ("{enabled: true, threshold: 0.8}", "rare and alarming: fewer false alarms"),
}
CLASS_EXAMPLE_THRESHOLDS = {"children_playing": 0.6, "drilling": 0.6, "engine_idling": 0.7,
                            "jackhammer": 0.6, "street_music": 0.6}  # fmt: skip

REFERENCE_INTRO = """\
# Configuration reference

<!-- Generated from monitor/config.py by `make docs` (python -m tools.config_docs --write):
edit the descriptions there, not this page. -->

soundmon reads one YAML file (`soundmon run --config PATH`; the shipped, fully commented
default is `config.yaml`, generated from the same descriptions as this page). Every key has a
default, so an empty file is valid and you only write the keys you change.

- **Validation.** The file is checked at start. Unknown sections or keys, wrong types,
  out-of-range values and keys given twice stop the daemon with one line on stderr that names the
  key path and what is allowed, and exit status 2, for example:
  `config /etc/soundmon/config.yaml: mqtt.port: expected an integer from 1 to 65535, got 70000` or
  `config config.yaml: mqtt.hots: unknown key (did you mean 'host'?); allowed keys: enabled, host, ...`.
  Labels under `detection.watch` and `detection.classes` are checked against the model's labels
  once the model is loaded (a typo names the likeliest label: `detection.watch: the model has no
  class 'smoke_alarm' (did you mean 'smoke_detector_smoke_alarm'?)`; a class configured but not
  watched is an error too), and the model files named by `model.path` must exist.
- **Reload.** `SIGHUP` (`systemctl reload soundmon`) re-reads the file. A valid file takes
  effect without dropping audio (detection settings apply from the next window; a class that
  becomes disabled ends its open event); an invalid one is logged and the running
  configuration stays. The storage clip keys need a restart.
- **YAML.** `null` means "not set / automatic". A section or class written with nothing after
  its colon (`mqtt:`) is empty, i.e. all defaults. Booleans are `true`/`false` (`yes`/`no` also
  work); a boolean where a number belongs is an error. `.inf` and `.nan` are not accepted.
- **Environment.** `SOUNDMON_STATE_DIR` replaces the `storage.state_dir` default when the
  file does not set that key (the systemd unit sets it to the service's state directory).
  `SOUNDMON_MODEL` replaces the shipped model when `model.path` is null.
- Relative paths are relative to the daemon's working directory.
"""

CLASS_REFERENCE_EXAMPLE = """\
```yaml
detection:
  classes:
    air_conditioner: {enabled: false}
    gun_shot: {threshold: 0.8}
    siren:                       # no keys: same as not listing it
```
"""


# -- what the models say -------------------------------------------------------------------------


def sections() -> list[tuple[str, type[BaseModel]]]:
    return [(name, field.annotation) for name, field in Config.model_fields.items()]


def doc_parts(model: type[BaseModel]) -> tuple[str, list[str]]:
    """(heading line without its final period, the paragraphs after it) of a model's docstring."""
    doc = inspect.cleandoc(model.__doc__ or "")
    paragraphs = [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]
    if not paragraphs:
        return "", []
    return paragraphs[0].rstrip("."), paragraphs[1:]


def description(field: FieldInfo, where: str) -> str:
    if not field.description:
        raise SystemExit(f"{where}: no description in monitor/config.py (every key needs one)")
    return " ".join(field.description.split())


def shipped_labels() -> list[str]:
    """The labels the shipped model reports: its `watch` list when it has one (a `background` output is never reported)."""
    data = json.loads(SHIPPED_BUNDLE_JSON.read_text())
    return list(data.get("watch") or data["labels"])




def _num(x: Any) -> str:
    """1, 0.01, -200, 10 000 000 (a space between thousands from five digits on)."""
    if float(x).is_integer() and abs(x) >= 10_000:
        return f"{int(x):,}".replace(",", " ")
    return f"{x:g}"


def _range(metadata: list[Any]) -> str:
    """', 1 to 65535', ' > 0', ', > 0 and ≤ 1', ' ≥ 0' or ''."""
    lo, lo_open, hi, hi_open = field_bounds(metadata)
    if lo is not None and hi is not None:
        if not lo_open and not hi_open:
            return f", {_num(lo)} to {_num(hi)}"
        return f", {'>' if lo_open else '≥'} {_num(lo)} and {'<' if hi_open else '≤'} {_num(hi)}"
    if lo is not None:
        return f" {'>' if lo_open else '≥'} {_num(lo)}"
    if hi is not None:
        return f" {'<' if hi_open else '≤'} {_num(hi)}"
    return ""


def type_text(ann: Any, metadata: list[Any]) -> str:
    """What a key takes, short: 'int, 1 to 32', 'float > 0 or null', 'bool', ..."""
    if get_origin(ann) in (Union, types.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        parts = [type_text(a, metadata) for a in args]
        if type(None) in get_args(ann):
            parts.append("null")
        text = ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]
        return text.replace(" or null", ", or null") if "," in parts[0] and len(parts) == 2 else text
    if get_origin(ann) is Literal:
        names = [f"`{a}`" for a in get_args(ann)]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    if get_origin(ann) is list:
        return "list of labels"
    if get_origin(ann) is dict:
        return "mapping of label to settings"
    if ann is bool:
        return "bool"
    if ann is int:
        return "int" + _range(metadata)
    if ann is float:
        return "float" + _range(metadata)
    if ann is str:
        return "string"
    if isinstance(ann, type) and issubclass(ann, Path):
        return "path"
    return getattr(ann, "__name__", str(ann))


def yaml_value(value: Any) -> str:
    """A value as one line of YAML flow style (`null`, `0.05`, `[a, b]`, `{}`)."""
    if isinstance(value, Path):
        value = str(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").strip()


def has_computed_default(field: FieldInfo) -> bool:
    return field.default_factory is not None and field.default is PydanticUndefined


def commented_out(key: str, field: FieldInfo) -> bool:
    return key in COMMENTED_OUT or (has_computed_default(field) and not isinstance(field.default_factory(), dict))


def default_value(field: FieldInfo) -> Any:
    return field.default_factory() if has_computed_default(field) else field.default


# -- config.yaml -----------------------------------------------------------------------------------


def _comment(text: str, indent: int) -> list[str]:
    pad = " " * indent + "# "
    return textwrap.wrap(text, WIDTH, initial_indent=pad, subsequent_indent=pad,
                         break_long_words=False, break_on_hyphens=False)  # fmt: skip


def _class_lines() -> list[str]:
    """The comments on the per-label keys, then `classes:` with a commented example per label."""
    out = _comment("Per label:", 2)
    for key, field in ClassConfig.model_fields.items():
        text = f"{key}: {description(field, f'detection.classes.<label>.{key}')}"
        out += textwrap.wrap(text, WIDTH, initial_indent="  #   ", subsequent_indent="  #     ",
                             break_long_words=False, break_on_hyphens=False)  # fmt: skip
    _, paragraphs = doc_parts(ClassConfig)
    for p in paragraphs:
        out += _comment(p, 2)
    out += _comment("Example (the numbers are illustrations, not tuned values): uncomment the "
                    "lines you want.", 2)  # fmt: skip
    out.append("  classes:")
    labels = shipped_labels()
    width = max(len(x) for x in labels) + 2
    rows = []
    for label in labels:
        value, note = CLASS_EXAMPLE.get(label, (None, None))
        if value is None:
            value = f"{{enabled: true, threshold: {CLASS_EXAMPLE_THRESHOLDS.get(label, 0.5)}}}"
        rows.append((f"    # {label + ':':<{width}}{value}", note))
    column = max(len(line) for line, _ in rows) + 3
    out += [f"{line:<{column}}# {note}" if note else line for line, note in rows]
    return out


def render_config_yaml() -> str:
    lines = YAML_HEADER.rstrip("\n").split("\n")
    for name, model in sections():
        heading, paragraphs = doc_parts(model)
        lines.append("")
        lines += _comment(f"{heading}.", 0)
        for p in paragraphs:
            lines.append("#")
            lines += _comment(p, 0)
        lines.append(f"{name}:")
        for key, field in model.model_fields.items():
            where = f"{name}.{key}"
            if key == "classes" and name == "detection":
                lines += _comment(description(field, where), 2)
                lines += _class_lines()
                continue
            lines += _comment(description(field, where), 2)
            examples = field.examples or []
            if commented_out(where, field):
                shown = examples[0] if examples and has_computed_default(field) else default_value(field)
                lines.append(f"  # {key}: {yaml_value(shown)}")
                continue
            for example in examples:
                lines.append(f"  # {key}: {yaml_value(example)}")
            lines.append(f"  {key}: {yaml_value(default_value(field))}")
    return "\n".join(lines) + "\n"


# -- docs/configuration.md -------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _row(key: str, field: FieldInfo, where: str) -> str:
    if where in COMPUTED_DEFAULT:
        default = COMPUTED_DEFAULT[where]
    elif has_computed_default(field):
        default = f"`{yaml_value(field.default_factory())}`"
    else:
        default = f"`{yaml_value(field.default)}`"
    text = description(field, where)
    for example in field.examples or []:
        text += f" Example: `{key.rsplit('.', 1)[-1]}: {yaml_value(example)}`."
    cells = [f"`{key}`", type_text(field.annotation, list(field.metadata)), default, text]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table(rows: list[str]) -> list[str]:
    return ["| key | type | default | description |", "|---|---|---|---|", *rows]


def render_reference() -> str:
    out = REFERENCE_INTRO.rstrip("\n").split("\n")
    for name, model in sections():
        heading, paragraphs = doc_parts(model)
        out += ["", f"## `{name}`: {heading[:1].lower()}{heading[1:]}", ""]
        for p in paragraphs:
            out += [p, ""]
        out += _table([_row(f"{name}.{key}", f, f"{name}.{key}") for key, f in model.model_fields.items()])
        if name == "detection":
            heading, paragraphs = doc_parts(ClassConfig)
            out += ["", "### `detection.classes.<label>`", "", f"{heading}."]
            out += ["", "Labels of the shipped model: " + ", ".join(f"`{x}`" for x in shipped_labels()) + "."]
            for p in paragraphs:
                out += ["", p]
            out.append("")
            out += _table([_row(f"detection.classes.<label>.{key}", f, f"detection.classes.<label>.{key}")
                           for key, f in ClassConfig.model_fields.items()])  # fmt: skip
            out += ["", *CLASS_REFERENCE_EXAMPLE.rstrip("\n").split("\n")]
    return "\n".join(out) + "\n"


# -- command line ----------------------------------------------------------------------------------


def generated() -> dict[Path, str]:
    """Each generated file and the text it should hold."""
    return {CONFIG_YAML: render_config_yaml(), REFERENCE: render_reference()}


def stale() -> list[Path]:
    """The generated files whose committed text differs from what `generated()` writes."""
    return [p for p, text in generated().items() if not p.is_file() or p.read_text(encoding="utf-8") != text]


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.config_docs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite config.yaml and docs/configuration.md")
    args = ap.parse_args(argv)
    if args.write:
        for path, text in generated().items():
            old = path.read_text(encoding="utf-8") if path.is_file() else None
            if old != text:
                path.write_text(text, encoding="utf-8")
                print(f"wrote {_shown(path)}")
        return 0
    out_of_date = stale()
    for path in out_of_date:
        print(f"{_shown(path)} is not what monitor/config.py generates; run: {COMMAND}")
    return 1 if out_of_date else 0


if __name__ == "__main__":
    sys.exit(main())
