"""The model runners one configuration needs: the main model's and, with fast start, the start
model's; built at start-up and rebuilt after a SIGHUP for only what changed (`build_runners`).

Apart from `monitor.runner` (one model's runner) so that `monitor.fast_start`, which opens the
start model through `monitor.runner.open_model`, sits between the two without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.bundle import ModelBundle
from monitor.fast_start import fast_start_on, start_runner_for
from monitor.runner import open_model

__all__ = ["Runners", "build_runners", "runners_for_opened"]


@dataclass(frozen=True)
class Runners:
    """The model runners of one configuration and what they were built for (`build_runners`).

    `path` and `threads` are the model's path and `model.threads`, `hop_seconds` the hop the
    main runner steps by; `runner` is a `ModelRunner` or, at its streaming hop, a
    `monitor.stream_runner.StreamingRunner`; `start_runner` the start model's runner while fast
    start is on, else None."""

    path: Path
    threads: int
    hop_seconds: float
    bundle: ModelBundle
    runner: Any
    start_runner: Any = None


def build_runners(path: str | Path, num_threads: int, detection: Any, reuse: Runners | None = None) -> Runners:
    """The bundle at `path`, its runner at `detection.hop_seconds` (`open_model`) and, when fast
    start is on (`fast_start_on`), its start model's runner (`start_runner_for`): what the daemon
    runs, at start-up and after a SIGHUP.

    Parameters: `path`, the bundle; `num_threads`, `model.threads`; `detection`, the detection
    settings in force (its hop and fast start threshold are read); `reuse`, runners already open
    (at start-up the CLI's main runner, with no start runner; at a SIGHUP the running ones). Its
    bundle and main runner are kept when they were built for the same path, threads and hop, and
    then its start runner too while fast start stays on (or off); what changed is opened anew.
    Returns the `Runners`; BundleError (one line) when a model cannot be opened.
    """
    path = Path(path)
    same = reuse is not None and (reuse.path, reuse.threads, reuse.hop_seconds) == (
        path, num_threads, detection.hop_seconds)  # fmt: skip
    if same:
        bundle, runner = reuse.bundle, reuse.runner
    else:
        bundle, runner = open_model(path, num_threads, detection.hop_seconds)
    if same and fast_start_on(bundle, detection) == (reuse.start_runner is not None):
        start_runner = reuse.start_runner
    else:
        start_runner = start_runner_for(bundle, detection, num_threads)
    return Runners(path, num_threads, detection.hop_seconds, bundle, runner, start_runner)


def runners_for_opened(path: str | Path, num_threads: int, detection: Any, bundle: ModelBundle, runner: Any) -> Runners:
    """The runners of a model the CLI already opened at `detection.hop_seconds` (`bundle`, `runner`):
    that runner kept, the start model's added while fast start is on (`build_runners`). What
    `soundmon run` and `soundmon classify` start from."""
    opened = Runners(Path(path), num_threads, detection.hop_seconds, bundle, runner)
    return build_runners(opened.path, num_threads, detection, reuse=opened)
