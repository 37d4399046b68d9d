"""`soundmon run`: the service loop that ties a source, the pipeline and the publisher together.

Main thread only: read audio from the source, push it through the pipeline, turn window results
into MQTT messages, and keep systemd informed (READY once audio flows, WATCHDOG from this loop
so a stalled pipeline gets restarted). Signals only set flags; the loop acts on them:
SIGHUP re-reads the config (detection settings apply at once, a device or model change
rebuilds that part, an MQTT or state-directory change restarts the publisher), SIGTERM/SIGINT
end open events, publish `offline`, flush and exit 0; a second SIGTERM/SIGINT while stopping
is logged and ignored, so it cannot cut the flush short. Open events are ended (END message,
state OFF) on every way out of the loop: end of file, signal, decode error, any exception.

Tuning over MQTT (`mqtt.control`): the publisher queues what arrives on `<base>/set/<label>/...`;
this loop drains the queue each iteration, parses the commands (monitor.control), keeps the
values in `<state_dir>/overrides.json` and applies them through the same path as a SIGHUP. The
detection settings in force are always `Overrides.apply(config.detection)`: a value set over
MQTT wins over config.yaml, which wins over the bundle's defaults; SIGHUP re-applies them over
the new file. The values in force are echoed, retained, on `<base>/config/<label>/...`.

Watched labels (`detection.watch`, else the bundle's default list, else all of the bundle's):
only they have events (the pipeline disables the others), retained states, Home Assistant
entities, echoes, places in `<base>/scores` and commands. A reload with another list ends the
open events of the labels dropped and has the publisher remove their entities and states.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from monitor import topics
from monitor.bundle import ModelBundle, load_bundle
from monitor.clips import ClipRecorder
from monitor.config import Config, DetectionConfig, check_state_dir, config_source, load_config
from monitor.control import CommandError, Overrides, parse_command
from monitor.detector import DetectionEvent
from monitor.discovery import label_topic_level, pretty_name
from monitor.errors import ConfigError, SoundmonError
from monitor.payloads import (
    ScoresText,
    config_values,
    detection_payload,
    event_line,
    level_payload,
    stats_payload,
)
from monitor.pipeline import SILENCE_DBFS, Pipeline, WindowResult
from monitor.publisher import Publisher, sw_version
from monitor.run_report import RunTimings
from monitor.runners import build_runners, runners_for_opened
from monitor.sdnotify import Notifier
from monitor.source import Source

__all__ = ["Daemon", "run_daemon"]

log = logging.getLogger("soundmon")
ANNOUNCED_FILENAME = "announced.json"  # in the state dir: the labels this node was published for
MAX_LABEL_CHARS = 200  # a label read back from announced.json longer than this is ignored
COMMANDS_PER_ITERATION = 256  # commands taken from the publisher per loop iteration
READ_TIMEOUT_S = 0.3
"""The loop's longest wait for audio. It asks the source for the audio of its next result (a window
or start check, every 0.25 s with the defaults) and wakes when that has arrived, so this bounds only
how late a stop, reload or MQTT command is seen while audio is late or the next result is a 0.5 s
window away (fast start off: two wakes per hop)."""
RELOAD_FLUSH_SECONDS = 5.0
"""How long a SIGHUP that changes `mqtt.*` or the state directory waits for the old broker to
acknowledge what is spooled (open events' ENDs last) before the new connection takes the rest."""


class LogLimiter:
    """At most `burst` lines at once, then one per `every_s` seconds; the next line that may be
    logged says how many were suppressed. Keeps a flood of bad MQTT commands out of the journal.

    Parameters: `burst`, lines allowed at once (a token bucket's size); `every_s`, seconds per
    line after that. `suppressed` counts lines dropped since the last one logged."""

    def __init__(self, burst: int = 20, every_s: float = 10.0) -> None:
        self.burst = float(burst)
        self.every_s = float(every_s)
        self._tokens = float(burst)
        self._at = time.monotonic()
        self.suppressed = 0

    def log(self, level: int, msg: str, *args: object) -> None:
        """`logging.log(level, msg, *args)` on the "soundmon" logger, unless over the budget."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) / self.every_s)
        self._at = now
        if self._tokens < 1.0:
            self.suppressed += 1
            return
        self._tokens -= 1.0
        if self.suppressed:
            msg += f" ({self.suppressed} more control line(s) suppressed before this one)"
            self.suppressed = 0
        log.log(level, msg, *args)


class RepeatedFileSource:
    """A file source played `times` times back to back as one continuous stream (soak runs);
    a `monitor.source.Source`.

    Parameters: `make_source`, a callable returning a new, unstarted `FileSource` (one per
    pass); `times`, how many passes (at least 1). `duration_s` is the total of all passes;
    health and stats are the current pass's source's."""

    def __init__(self, make_source, times: int) -> None:
        self._make = make_source
        self.remaining = max(1, int(times))
        self._src = make_source()
        self.duration_s = self._src.duration_s * self.remaining

    def start(self) -> None:
        self._src.start()

    def stop(self) -> None:
        self._src.stop()

    @property
    def finished(self) -> bool:
        return self._src.finished and self.remaining <= 1

    @property
    def health(self) -> str:
        return self._src.health

    @property
    def stats(self) -> dict:
        return self._src.stats

    gap_count = 0
    last_gap_samples = 0

    def read(self, timeout: float, want: int = 1) -> np.ndarray:
        block = self._src.read(timeout, want)
        if self._src.finished and self.remaining > 1:
            self.remaining -= 1
            self._src = self._make()
            self._src.start()
        return block


@dataclass
class _Flags:
    stop: bool = False
    reload: bool = False
    signal_name: str = ""
    stopping: bool = False  # shutdown has begun: further stop signals are only logged


class Daemon:
    """One running service: owns the source, the pipeline, the publisher and the notifier.

    Why a class: the loop's state lives here, and SIGHUP replaces parts of it (runners, pipeline,
    source, publisher) while the loop runs. `run_daemon` is the usual way in.

    Parameters: `cfg`, the checked configuration; `bundle` and `runner`, the model the CLI opened
    and checked (the start model, when fast start is on, is opened here); `source`, "mic" or an
    audio file's path; `pace`, "realtime" or "fast" for a file (`FileSource`); `config_path`, the
    file a SIGHUP re-reads (None: a reload reads the defaults); `model_override`, `--model`,
    which wins over `model.path`; `print_events`, also print each event as a line on stdout;
    `repeat`, passes over a file (`RepeatedFileSource`); `publisher`, a publisher to use
    instead of one built from `cfg.mqtt` (tests); `notifier`, systemd's (default: from
    `$NOTIFY_SOCKET`); `report`, a path for the run's timings at exit (`monitor.run_report`,
    what `soundmon bench` reads), or None."""

    def __init__(
        self,
        cfg: Config,
        bundle: ModelBundle,
        runner,
        source: str = "mic",
        pace: str = "realtime",
        config_path: Path | None = None,
        model_override: Path | None = None,
        print_events: bool = False,
        repeat: int = 1,
        publisher=None,
        notifier: Notifier | None = None,
        report: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.source_spec = source
        self.pace = pace
        self.config_path = config_path
        self.model_override = model_override
        self.print_events = print_events
        self.repeat = repeat
        self.report_path = report  # `soundmon run --report`: the run's timings at exit (monitor.run_report)
        self.flags = _Flags()
        self.notifier = notifier or Notifier()
        self.node = cfg.mqtt.node_id
        # one budget for refused commands, one for changes: a flood of either cannot hide the other
        self._control_log = LogLimiter()
        self._change_log = LogLimiter()
        # Values set over MQTT, applied over config.yaml before the pipeline is built.
        self.overrides = Overrides.in_state_dir(cfg.storage.state_dir)
        self._load_overrides(cfg, bundle.labels)
        detection = self._detection(cfg)
        # the CLI opened the model (and checked it against the config); the start model is added here.
        # `runners` is the one record of the bundle and runners in force (the pipeline runs them).
        self.runners = runners_for_opened(self._model_path(cfg), cfg.model.threads, detection, bundle, runner)
        self.pipeline = Pipeline(bundle, runner, detection, start_runner=self.runners.start_runner)
        self._set_names()
        self.publisher = publisher if publisher is not None else self._make_publisher(cfg)
        self.publisher.set_config(self._config_values())
        self._publisher_key = self._publisher_settings(cfg)
        self._last_scores_offset = -math.inf
        self.source: Source | None = None
        self.clips: ClipRecorder | None = None
        # The wall-clock time of stream offset 0 (`_anchor_clock`), and each open event's start time
        # as its START said it, so its END says the same.
        self._stream_start_wall: float | None = None
        self._start_times: dict[str, float] = {}
        self._start_monotonic = time.monotonic()
        self._last_level = 0.0
        self._last_stats = 0.0
        self._last_watchdog = 0.0
        self._periodic_due = -math.inf  # `_periodic`: nothing can be due before this (monotonic s)
        self._last_status = ""
        self._gap_seen = 0
        self._ready = False
        self._level_sum = 0.0
        self._level_n = 0
        self._events_started = 0
        self.timings = RunTimings()
        self._held: list[np.ndarray] = []
        self._held_samples = 0
        # all-time counters of the microphones a reload replaced (`_source_stats`)
        self._replaced_input_counts = {"dropped_samples": 0, "overflows": 0, "reopen_count": 0,
                                       "nonfinite_samples": 0}  # fmt: skip

    @property
    def bundle(self) -> ModelBundle:
        """The model bundle in force (`self.runners.bundle`)."""
        return self.runners.bundle

    # -- construction --------------------------------------------------------------------------

    def _make_publisher(self, cfg: Config) -> Publisher:
        """The publisher for `cfg`; with `mqtt.enabled: false` one whose methods do nothing
        (state `disabled`): detections are then only logged (and printed with --print)."""
        watched = self._watched()
        return Publisher(cfg.mqtt, cfg.storage, watched, self.bundle.name, logger=log,
                         enabled=self._detection(cfg).enabled_labels(watched),
                         window=cfg.mqtt.max_inflight, flush_rate=cfg.mqtt.flush_rate,
                         display_names=self.bundle.display_names,
                         scores=cfg.detection.scores_interval > 0)  # fmt: skip

    def _model_path(self, cfg: Config) -> Path:
        """The model `cfg` runs: `--model`, else `model.path`, else the shipped model."""
        return Path(self.model_override or cfg.model.resolved_path())

    @staticmethod
    def _publisher_settings(cfg: Config) -> tuple:
        """What the publisher is built from: a SIGHUP that changes any of it restarts the publisher.

        `mqtt.stats_interval` is read by the daemon loop itself, so it is left out; the password
        is in, so a rotated password file is applied by SIGHUP as well.
        """
        if not cfg.mqtt.enabled:
            return (False,)
        return (cfg.mqtt.model_dump(exclude={"stats_interval"}), cfg.mqtt.password(),
                Path(cfg.storage.state_dir).resolve(), cfg.storage.spool_max_messages)  # fmt: skip

    def _open_source(self) -> Source:
        rate = self.bundle.frontend.sample_rate
        if self.source_spec == "mic":
            from monitor.mic_source import MicSource

            return MicSource(self.cfg.audio, rate, logger=log)
        from monitor.file_source import FileSource

        def make() -> FileSource:
            return FileSource(self.source_spec, rate, pace=self.pace, block_seconds=self.cfg.audio.block_seconds)

        return make() if self.repeat <= 1 else RepeatedFileSource(make, self.repeat)

    def _make_clips(self) -> ClipRecorder | None:
        st = self.cfg.storage
        if not st.clips_enabled:
            return None
        try:
            return ClipRecorder(
                Path(st.state_dir) / "clips", self.bundle.frontend.sample_rate,
                pre_seconds=st.clip_pre_seconds + self.bundle.window_seconds, post_seconds=st.clip_post_seconds,
                max_bytes=int(st.clips_max_mb * 1e6),
            )  # fmt: skip
        except OSError as exc:
            raise ConfigError(f"storage.clips_enabled: cannot create {Path(st.state_dir) / 'clips'} "
                              f"({exc.strerror or exc})") from None  # fmt: skip

    # -- signals -------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT ask for a clean stop, SIGHUP for a reload; the loop acts on the flags.

        Once a stop has been asked for, another SIGTERM/SIGINT (systemd's stop and an impatient
        operator, or two `kill`s) is logged and ignored: the shutdown still ends open events,
        flushes the spool and exits 0 instead of dying with status 143.
        """

        def on_stop(signum: int, _frame: object) -> None:
            name = signal.Signals(signum).name
            if self.flags.stop or self.flags.stopping:
                log.info("%s received while stopping: ignored, the shutdown finishes first", name)
                return
            self.flags.stop = True
            self.flags.signal_name = name

        def on_hup(_signum: int, _frame: object) -> None:
            self.flags.reload = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    @staticmethod
    def ignore_stop_signals() -> None:
        """After the shutdown: SIGTERM/SIGINT (and SIGHUP) are ignored for the rest of the
        process's life.

        Why not keep the Python handler: at interpreter exit CPython puts every signal that has
        a Python handler back to SIG_DFL, so a SIGTERM arriving in those last milliseconds would
        still kill the process (status 143), and a SIGHUP (`systemctl reload`, logrotate) would
        end it by signal, which systemd records as a failure. SIG_IGN is left alone by that
        clean-up.
        """
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)

    # -- main loop -----------------------------------------------------------------------------

    def _smoothing_text(self) -> str:
        """"smoothing 3" or, with labels of their own N, "smoothing 3 (7: air_conditioner, ...)":
        the settings the pipeline's detector runs with."""
        detector = self.pipeline.detector
        own: dict[int, list[str]] = {}
        for label, k in detector.class_smoothing.items():  # only the labels whose N differs
            own.setdefault(k, []).append(label)
        n = detector.smoothing_windows
        extra = "; ".join(f"{k}: {', '.join(labels)}" for k, labels in sorted(own.items()))
        return f"smoothing {n}" + (f" ({extra})" if extra else "")

    def _fast_start_text(self) -> str:
        """"0.9", with the start model's weight in each window's score "0.9 (weight 0.3)", with
        labels it may open alone "0.9 (alone: gun_shot)"."""
        detector = self.pipeline.detector
        alone = [x for x in detector.labels if x in detector.fast_start_alone and x in detector.enabled]
        notes = ([f"weight {detector.start_weight:g}"] if detector.start_weight else []) + (
            [f"alone: {', '.join(alone)}"] if alone else [])  # fmt: skip
        return f"{self.cfg.detection.fast_start_threshold:g}" + (f" ({'; '.join(notes)})" if notes else "")

    def run(self) -> int:
        """Run until the file ends or a stop signal; returns the exit status (0 on a clean stop).

        A decode error or any other exception ends the run with the exception (the CLI turns a
        SoundmonError into one line and its exit status), but only after the open events have
        been ended and published and the publisher has flushed."""
        check_state_dir(self.cfg)  # the CLI checked already; here for other callers
        self.clips = self._make_clips()
        # The source first: a missing device is a one-line error before anything connects.
        self.source = self._open_source()
        self.source.start()
        log.info(
            "starting: model %s (%s; runtime %s), source %s, hop %.2f s, %s%s, mqtt %s",
            self.bundle.name, self._watch_text(), self.runners.runner.runtime,
            self.source_spec, self.cfg.detection.hop_seconds, self._smoothing_text(),
            "" if self.runners.start_runner is None else f", fast start {self._fast_start_text()}",
            f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port} as {self.cfg.mqtt.base}" if self.cfg.mqtt.enabled else "off",
        )  # fmt: skip
        overridden = self.cfg.detection.overridden_calibration(
            self.bundle.detection_defaults, self.bundle.class_smoothing_windows)
        if overridden:
            log.info("config overrides model %s's calibration: %s; leave the key out to use the bundle's",
                     self.bundle.name, "; ".join(overridden))  # fmt: skip
        self._announce(self.cfg, forget=True)
        self.publisher.start()
        failed: BaseException | None = None
        try:
            while not self.flags.stop:
                if self.flags.reload:
                    self.flags.reload = False
                    self.reload()
                self._handle_commands()
                block = self.source.read(timeout=READ_TIMEOUT_S, want=self._wanted())
                self._handle_gap()
                if len(block):
                    self._anchor_clock(len(block))
                    if self.clips is not None:
                        self.clips.add_audio(block)
                    self._feed(block)
                    if not self._ready:
                        self._ready = True
                        self.notifier.ready(self._status_line())
                        log.info("audio flowing; ready")
                self._periodic()
                if self.source.finished:
                    self._feed_pending()
                    log.info("end of %s after %.1f s of audio", self.source_spec, self.pipeline.offset_s)
                    padded, closing = self.pipeline.finish()
                    for res in padded:
                        self._on_window(res)
                    self._emit(closing)
                    break
            else:
                log.info("%s received: stopping", self.flags.signal_name or "stop")
        except BaseException as exc:
            failed = exc
            raise
        finally:
            self.flags.stopping = True
            self._end_open_events(failed)
            self._shutdown()
        return 0

    def _end_open_events(self, failed: BaseException | None) -> None:
        """End every open event (END message, state OFF) before the publisher stops.

        The audio already read is processed first: after a decode error in the middle of a file
        that is everything up to the error. Problems here are logged, never raised, so that the
        shutdown (and the original error, if any) still happen.
        """
        if failed is not None:
            what = str(failed) if isinstance(failed, SoundmonError) else f"{type(failed).__name__}: {failed}"
            log.error("stopping after an error at %.1f s of audio: %s", self.pipeline.offset_s, " ".join(what.split()))
        try:
            self._feed_pending()
        except Exception as exc:  # the pipeline itself failed: close the events without that audio
            self._held, self._held_samples = [], 0
            log.error("cannot process the last audio (%s: %s); ending open events", type(exc).__name__, exc)
        try:
            closing = self.pipeline.detector.close(self.pipeline.offset_s)
            if closing:
                log.info("ending %d open event(s)", sum(ev.type == "end" for ev in closing))
            self._emit(closing)
        except Exception as exc:
            log.error("cannot end the open events (%s: %s)", type(exc).__name__, exc)

    def _shutdown(self) -> None:
        self.notifier.stopping()
        if self.source is not None:
            self.source.stop()
        if self.clips is not None:
            self.clips.flush_all()
        self._publish_stats()
        if self.report_path is not None:
            self.timings.write(self.report_path, self.pipeline, self.runners.runner, self._events_started,
                               self.publisher.spool_depth)  # fmt: skip
        self.publisher.stop(timeout=3.0)
        log.info("stopped: %d windows, %d events", self.pipeline.stats.windows, self._events_started)

    def _wanted(self) -> int:
        """Samples the pipeline still needs for its next window or start check, beyond those held
        (`_feed`): what the loop asks the source for, so it wakes once per result, not per block."""
        return max(1, self.pipeline.samples_until_window() - self._held_samples)

    def _feed(self, block: np.ndarray) -> None:
        """Hold audio back until it completes the next window, then run the pipeline once.

        Windows come only every hop, so batching up to the next window boundary gives the same
        results at the same moments with one front-end call per hop instead of one per block.
        """
        self._held.append(block)
        self._held_samples += len(block)
        if self._held_samples >= self.pipeline.samples_until_window():
            self._feed_pending()

    def _feed_pending(self) -> None:
        if not self._held:
            return
        audio = self._held[0] if len(self._held) == 1 else np.concatenate(self._held)
        self._held, self._held_samples = [], 0
        for res in self.pipeline.process(audio):
            self._on_window(res)

    def _handle_gap(self) -> None:
        gaps = self.source.gap_count
        if gaps != self._gap_seen:
            self._gap_seen = gaps
            self._gap(int(self.source.last_gap_samples))

    def _gap(self, missing: int) -> None:
        """The audio breaks (`missing` samples lost, or a new input): what was held goes in
        first, the open events end (their ENDs published), and the pipeline's and the clips'
        timelines count the gap alike."""
        self._feed_pending()
        self._emit(self.pipeline.gap(missing))
        if self.clips is not None:
            self.clips.add_gap(missing)

    def _on_window(self, res: WindowResult) -> None:
        if res.kind == "start_check":  # fast start between two windows: only its event, if any
            self._emit(res.events)
            return
        if self.timings.window_done(res.end_offset_s):
            log.info("first window result %.3f s after start", time.monotonic() - self._start_monotonic)
        self._level_sum += 10 ** (res.level_dbfs / 10.0) if res.level_dbfs > SILENCE_DBFS else 0.0
        self._level_n += 1
        self._emit(res.events)
        interval = self.cfg.detection.scores_interval
        if interval > 0 and self.publisher.connected:
            since = res.end_offset_s - self._last_scores_offset
            if not 0.0 <= since < interval - 1e-6:  # (negative: a new pipeline restarted the offsets)
                self._last_scores_offset = res.end_offset_s
                t0 = time.perf_counter()
                self.publisher.publish_scores(self.scores_text(res))
                self.timings.scores_s += time.perf_counter() - t0
                self.timings.scores_messages += 1

    def scores_text(self, res: WindowResult) -> str:
        """`<base>/scores` for window `res` as JSON text (`monitor.payloads.ScoresText`: the text
        of `monitor.payloads.scores_payload`)."""
        detector = self.pipeline.detector
        # `raw`: the window's score as the detector counts it (with a start-model weight, both models')
        raw = None if res.scores is None else detector.latest
        return self._scores_text(self._watched_idx, detector.smoothed, raw,
                                 res.end_offset_s, res.level_dbfs, self._stream_start())  # fmt: skip

    # -- events --------------------------------------------------------------------------------

    def _anchor_clock(self, new_samples: int) -> None:
        """Tie stream offsets to the wall clock as `new_samples` more arrive (before they are fed).

        A file is anchored once, at its first block: its offsets are its own timeline. A
        microphone is anchored again at every read, to the moment its newest sample arrived, so
        event times follow the system clock: a Raspberry Pi without a real-time clock steps its
        clock when NTP first answers, often after the service started, and a sound card's sample
        clock drifts from the system's by tens of ppm (minutes a month); an offset counted from a
        start anchored once would carry either error for as long as the daemon runs."""
        if self._stream_start_wall is not None and self.source_spec != "mic":
            return
        received = self.pipeline.offset_s + (self._held_samples + new_samples) / self.bundle.frontend.sample_rate
        self._stream_start_wall = time.time() - received

    def _stream_start(self) -> float:
        """The wall-clock time of stream offset 0 (now, before any audio has arrived)."""
        return self._stream_start_wall or time.time()

    def detection_payload(self, ev: DetectionEvent) -> dict[str, Any]:
        """`<base>/detection` for `ev` (`monitor.payloads.detection_payload`); an END carries the
        start time its START did, even if the clock was re-anchored in between."""
        start = self._stream_start()
        if ev.type == "start":
            self._start_times[ev.id] = start + ev.start_offset_s
            return detection_payload(ev, start, self.node, self.bundle.name)
        return detection_payload(ev, start, self.node, self.bundle.name, start_time=self._start_times.pop(ev.id, None))

    def _emit(self, events: list[DetectionEvent]) -> None:
        for ev in events:
            payload = self.detection_payload(ev)
            if ev.type == "start":
                self._events_started += 1
                if self.clips is not None:
                    self.clips.event_started(ev.id, ev.label, ev.start_offset_s)
            elif self.clips is not None:
                clip = self.clips.event_ended(ev.id, payload["end_offset_s"])
                if clip:
                    payload["clip"] = clip
            # Spool first (inside publish_detection), then state: nothing detected is lost.
            t0 = time.perf_counter()
            self.publisher.publish_detection(payload)
            self.publisher.set_state(ev.label, ev.type == "start")
            self.timings.publish_s += time.perf_counter() - t0
            if ev.type == "start":
                log.info("detected %s (score %.2f) at %.1f s [%s]", ev.label, ev.score, ev.start_offset_s, ev.id[:8])
            else:
                log.info("ended %s after %.1f s (peak %.2f) [%s]", ev.label, payload["duration_s"], ev.peak_score, ev.id[:8])
            if self.print_events:
                print(event_line(payload), flush=True)

    # -- periodic messages ---------------------------------------------------------------------

    def _periodic(self) -> None:
        """The watchdog ping, `<base>/level` and `<base>/stats` when each is due.

        Called at every turn of the loop (each read of audio: about 4 times per audio second
        with the defaults, more while commands arrive), so it first compares the clock
        with the earliest moment any of them can be due (`_periodic_due`, computed after each
        full pass) and returns; a reload resets that moment, as it may change the intervals."""
        now = time.monotonic()
        if now < self._periodic_due:
            return
        interval = self.notifier.watchdog_interval()
        if interval and now - self._last_watchdog >= min(interval, 5.0):
            self._last_watchdog = now
            self.notifier.watchdog()
        lvl = self.cfg.detection.level_interval
        if lvl > 0 and now - self._last_level >= lvl and self._level_n:
            self._last_level = now
            mean = self._level_sum / self._level_n
            self._level_sum, self._level_n = 0.0, 0
            self.publisher.publish_level(level_payload(time.time(), mean))
        if now - self._last_stats >= self.cfg.mqtt.stats_interval:
            self._last_stats = now
            self._publish_stats()
            status = self._status_line()
            if status != self._last_status:
                self._last_status = status
                self.notifier.status(status)
        # The earliest moment a check above can pass, less a microsecond so that rounding in
        # `last + interval` never skips a pass the comparisons above would make.
        due = [self._last_stats + self.cfg.mqtt.stats_interval]
        if interval:
            due.append(self._last_watchdog + min(interval, 5.0))
        if lvl > 0:
            due.append(self._last_level + lvl)
        self._periodic_due = min(due) - 1e-6

    def stats_payload(self) -> dict[str, Any]:
        """`<base>/stats` now (`monitor.payloads.stats_payload`)."""
        return stats_payload(
            now=time.time(), uptime_s=time.monotonic() - self._start_monotonic, stats=self.pipeline.stats,
            audio_seconds=self.pipeline.offset_s, audio_state=self._audio_health(),
            source_stats=self._source_stats(), publisher=self.publisher,
            events=self._events_started, active=self.pipeline.detector.active, model=self.bundle.name,
            version=sw_version(), host=socket.gethostname(),
        )  # fmt: skip

    def _source_stats(self) -> dict[str, Any]:
        """The source's counters, with those of the inputs a reload replaced added: the stats'
        all-time counts never go backwards."""
        stats = dict(self.source.stats) if self.source is not None else {}
        for key, before in self._replaced_input_counts.items():
            stats[key] = int(stats.get(key, 0)) + before
        return stats

    def _audio_health(self) -> str:
        """The source's health (`ok` before the source is open)."""
        return self.source.health if self.source is not None else "ok"

    def _publish_stats(self) -> None:
        self.publisher.publish_stats(self.stats_payload())

    def _status_line(self) -> str:
        st = self.pipeline.stats
        p50, _ = st.inference_percentiles()
        return (
            f"audio {self._audio_health()}, mqtt {self.publisher.state}, "
            f"{st.windows} windows, {self._events_started} events, inference p50 {p50:.2f} ms, "
            f"spool {self.publisher.spool_depth}"
        )

    # -- control over MQTT ----------------------------------------------------------------------

    @staticmethod
    def _control_on(cfg: Config) -> bool:
        """Commands are subscribed and the values set over MQTT apply (else config.yaml alone)."""
        return cfg.mqtt.enabled and cfg.mqtt.control

    def _detection(self, cfg: Config) -> DetectionConfig:
        """The detection settings in force: config.yaml's, with the values set over MQTT over them."""
        return self.overrides.apply(cfg.detection) if self._control_on(cfg) else cfg.detection

    def _load_overrides(self, cfg: Config, labels: list[str]) -> None:
        """Read overrides.json (values of labels the model lacks are not applied, and kept in the
        file for a later model that has them); a broken file is logged, never fatal."""
        problem = self.overrides.load(labels)
        if problem:
            log.warning("control: %s", problem)
        held = self._overrides_text()
        if held and self._control_on(cfg):
            log.info("control: values set over MQTT in force: %s (%s)", held, self.overrides.path)
        elif held:
            log.info("control: mqtt.%s: the values set over MQTT in %s are not applied (%s)",
                     "enabled is false" if not cfg.mqtt.enabled else "control is false",
                     self.overrides.path, held)  # fmt: skip

    def _overrides_text(self) -> str:
        o = self.overrides
        parts = [f"{label} threshold {o.thresholds[label]:g}" for label in sorted(o.thresholds)]
        parts += [f"{label} {'enabled' if o.enabled[label] else 'disabled'}" for label in sorted(o.enabled)]
        return ", ".join(parts)

    def _watched(self) -> list[str]:
        """The labels that have events, states, entities, echoes, scores and commands, in the
        bundle's order: `detection.watch`, else the bundle's default list, else all its labels
        (set by `_set_names`). The detector disables the others (`monitor.pipeline`)."""
        return self._watch

    def _watch_text(self) -> str:
        """`watching 11 of 521 labels: screaming, baby_cry_infant_cry, ...` for the log (at most
        20 named), or `10 labels` when every label is watched (the shipped urban10 model)."""
        watched, labels = self._watched(), self.bundle.labels
        if len(watched) == len(labels):
            return f"{len(labels)} labels"
        shown = ", ".join(watched[:20]) + (", ..." if len(watched) > 20 else "")
        return f"watching {len(watched)} of {len(labels)} labels: {shown}"

    def _set_names(self, cfg: Config | None = None) -> None:
        """Per-bundle and per-config lookups: the watched labels (of `cfg`, default the running
        config: a reload passes the new one before it is in force), display names, the watched
        labels' indices and topic levels."""
        self._watch = (cfg or self.cfg).detection.watched_labels(self.bundle.labels, self.bundle.watch)
        names = self.bundle.display_names or {}
        self._names = [names.get(label) or pretty_name(label) for label in self.pipeline.labels]
        self._scores_text = ScoresText(self.pipeline.labels, self._names)
        index = {label: i for i, label in enumerate(self.pipeline.labels)}
        self._watched_idx = np.array([index[label] for label in self._watched()], dtype=np.intp)
        self._levels = {label_topic_level(label): label for label in self._watched()}

    def _announce(self, cfg: Config, forget: bool) -> None:
        """Keep `<state_dir>/announced.json`: the watched labels this node's entities, states and
        echoes are published for (with the node id, base topic and discovery prefix they live
        under). At start (`forget`), the labels it names that are not watched now (a shorter
        `detection.watch` or another model since the last run) go to the publisher, which removes
        their entities, states and echoes at connect: a reload does that by itself, but a restart
        could not know them. Problems are logged, never fatal."""
        if not cfg.mqtt.enabled:
            return
        path = Path(cfg.storage.state_dir) / ANNOUNCED_FILENAME
        where = self._where(cfg)
        watched = self._watched()
        if forget:
            before = self._read_announced(path)
            self._retract_previous(before, where, self.publisher)
            gone = self._announced_before(before, where, set(watched))
            if gone:
                shown = ", ".join(gone[:20]) + (", ..." if len(gone) > 20 else "")
                log.info("mqtt: removing the entities, states and echoes of %d label(s) no longer watched "
                         "since the last run: %s", len(gone), shown)  # fmt: skip
                self.publisher.forget_labels(gone)
        text = json.dumps({**where, "labels": watched}, indent=1) + "\n"
        try:
            if path.is_file() and path.read_text(encoding="utf-8") == text:
                return
            tmp = path.with_name(f".{ANNOUNCED_FILENAME}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("mqtt: cannot write %s (%s): labels dropped from the watch list while the "
                        "daemon is stopped will keep their Home Assistant entities", path,
                        getattr(exc, "strerror", None) or exc)  # fmt: skip

    @staticmethod
    def _where(cfg: Config) -> dict[str, str]:
        """The identity this node's topics live under (announced.json's keys)."""
        return {"node_id": cfg.mqtt.node_id, "base": cfg.mqtt.base, "discovery_prefix": cfg.mqtt.discovery_prefix}

    @staticmethod
    def _read_announced(path: Path) -> dict[str, Any] | None:
        """`path` (an announced.json): its node id, base topic, discovery prefix (strings that make
        valid topics) and labels (only names that make a valid topic level); None when it is
        missing, unreadable or malformed."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            log.warning("mqtt: ignoring %s (%s)", path, getattr(exc, "strerror", None) or exc)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("labels"), list):
            return None
        where = {k: data.get(k) for k in ("node_id", "base", "discovery_prefix")}
        if not all(isinstance(v, str) and v and topics.topic_problem(v) is None for v in where.values()):
            return None
        # read back from disk: only names that make a valid topic level are used
        labels = [x for x in dict.fromkeys(data["labels"]) if isinstance(x, str) and 0 < len(x) <= MAX_LABEL_CHARS
                  and topics.level_problem(label_topic_level(x)) is None]  # fmt: skip
        return {**where, "labels": labels}

    @staticmethod
    def _announced_before(data: dict[str, Any] | None, where: dict[str, str], watched: set[str]) -> list[str]:
        """The labels announced.json (`_read_announced`'s `data`) says were published under
        `where` and are not in `watched`; [] without a usable file or when it is about another
        identity (`_retract_previous`)."""
        if data is None or any(data[k] != v for k, v in where.items()):
            return []
        return [x for x in data["labels"] if x not in watched]

    @staticmethod
    def _retract_previous(data: dict[str, Any] | None, where: dict[str, str], publisher: Publisher) -> None:
        """announced.json (`_read_announced`'s `data`) says this node was published under another
        node id, base topic or discovery prefix (renamed in the config since): the publisher
        empties those retained topics at connect, so Home Assistant does not keep the old device
        beside the new one."""
        if data is None or all(data[k] == v for k, v in where.items()):
            return
        log.info("mqtt: this node was published as %s (discovery under %s/) before: removing those "
                 "retained topics", data["base"], data["discovery_prefix"])  # fmt: skip
        publisher.retract_node(data["node_id"], data["base"], data["discovery_prefix"], data["labels"])

    def _config_values(self) -> dict[str, tuple[float, bool]]:
        """label -> (threshold, enabled) in force, for the `<base>/config/<label>/...` echoes."""
        return config_values(self.pipeline.detection, self.bundle.thresholds, self.bundle.labels, self._watched())

    def _in_force(self) -> dict[tuple[str, str], tuple[object, str]]:
        """(label, key) -> (value in force, where it comes from) for every watched label."""
        out: dict[tuple[str, str], tuple[object, str]] = {}
        for label, (threshold, on) in self._config_values().items():
            for key, value in (("threshold", threshold), ("enabled", on)):
                out[(label, key)] = (value, self.overrides.origin(label, key, self.cfg.detection))  # type: ignore[arg-type]
        return out

    def _handle_commands(self) -> None:
        """Apply what arrived on `<base>/set/<label>/...` since the last iteration.

        Each command is parsed on its own (a bad one is logged, rate-limited, and ignored); all
        the valid ones of a batch are then saved once and applied once, through the SIGHUP path
        (`Pipeline.apply_detection_config`: a class that got disabled ends its open event), with
        one log line per value that changed and the echoes of the new values."""
        items = self.publisher.take_commands(COMMANDS_PER_ITERATION)
        if not items or not self._control_on(self.cfg):
            return
        try:
            self._apply_commands(items)
        except Exception as exc:  # a bug here must not stop the audio: log it, keep running
            self._control_log.log(logging.ERROR, "control: cannot apply the commands (%s: %s)",
                                  type(exc).__name__, " ".join(str(exc).split())[:300])  # fmt: skip

    def _apply_commands(self, items: list[tuple[str, bytes, bool]]) -> None:
        before = self._in_force()
        changed = False
        for topic, payload, retained in items:
            if retained:
                self._control_log.log(logging.WARNING, "control: ignored the retained command on %.200s: "
                                      "commands act when they are sent, a retained one is not replayed", topic)  # fmt: skip
                continue
            try:
                cmd = parse_command(self.cfg.mqtt.base, topic, payload, self._levels)
            except CommandError as exc:
                self._control_log.log(logging.WARNING, "control: ignored: %s", " ".join(str(exc).split()))
                continue
            changed |= self.overrides.set(replace(cmd, label=self._levels[cmd.label]))
        if not changed:
            return
        try:
            self.overrides.save()
        except OSError as exc:
            self._control_log.log(logging.ERROR, "control: cannot save %s (%s): the new values apply "
                                  "until the service stops", self.overrides.path, exc.strerror or exc)  # fmt: skip
        self._emit(self.pipeline.apply_detection_config(self._detection(self.cfg)))
        after = self._in_force()
        for (label, key), (value, origin) in after.items():
            if before[(label, key)] != (value, origin):
                self._change_log.log(logging.INFO, "control: %s", self._change_text(label, key, value, origin))
        if any(before[(label, "enabled")][0] != after[(label, "enabled")][0] for label in self._watched()):
            self.publisher.update_labels(self._watched(), self.pipeline.detection.enabled_labels(self._watched()),
                                         self.bundle.display_names)  # fmt: skip
        self.publisher.set_config(self._config_values())

    def _change_text(self, label: str, key: str, value: object, origin: str) -> str:
        """`siren threshold 0.35 (set over MQTT; config 0.5)`, `siren threshold 0.5 (back to the
        config value)`, `dog_bark disabled (set over MQTT; config: enabled)`."""
        labels = self.bundle.labels
        if key == "threshold":
            shown = f"threshold {float(value):g}"  # type: ignore[arg-type]
            configured = self.cfg.detection.classes.get(label)
            base = self.cfg.detection.thresholds(self.bundle.thresholds, labels)[label]
            in_file = configured is not None and configured.threshold is not None
            base_text = f"{'config' if in_file else 'model default'} {base:g}"
        else:
            shown = "enabled" if value else "disabled"
            base_on = label in self.cfg.detection.enabled_labels(labels)
            base_text = f"config: {'enabled' if base_on else 'disabled'}"
        if origin == "mqtt":
            return f"{label} {shown} (set over MQTT; {base_text})"
        where = {"config": "the config value", "model": "the model's default"}.get(origin, "the default")
        return f"{label} {shown} (back to {where})"

    # -- reload --------------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read the config; an invalid file is logged and the running config stays.

        Applied at once: detection.*, model.*, logging.level, audio.* (the microphone is
        reopened), mqtt.* and storage.state_dir / storage.spool_max_messages (the publisher is
        restarted: see `_switch_publisher`). What cannot be applied without a restart
        (storage.clip*, and audio.block_seconds of a file source) is named in the log line.
        """
        self.notifier.reloading()
        self._periodic_due = -math.inf  # new intervals may make a message due sooner
        try:
            new = load_config(self.config_path)
            model_path = self._model_path(new)
            new.detection.apply_bundle_defaults(load_bundle(model_path).detection_defaults)
            model_changed = (model_path, new.model.threads) != (self.runners.path, self.runners.threads)
            # reopened for another model, threads or hop (a new hop may switch between the
            # streaming and the window runner); the start model also when fast start turns on or off
            runners = build_runners(model_path, new.model.threads, self._detection(new), reuse=self.runners)
            bundle, start_runner = runners.bundle, runners.start_runner
            new.check_against_labels(bundle.labels, source=config_source(self.config_path), default_watch=bundle.watch)
            new.mqtt.check_label_topics(bundle.labels, source=f"model {model_path}")
            publisher_key = self._publisher_settings(new)  # reads the password: ConfigError if it cannot
            if publisher_key != self._publisher_key:
                check_state_dir(new)
                new.mqtt.check_tls_files()
            if (start_runner is None) != (self.runners.start_runner is None):
                log.info("reload: fast start %s", "off" if start_runner is None
                         else f"on at {new.detection.fast_start_threshold:g}")  # fmt: skip
        except SoundmonError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            self.notifier.ready(self._status_line())
            return
        old_cfg = self.cfg  # (the audio branch below sets self.cfg early)
        self._reload_overrides(new, bundle, model_changed)
        detection = self._detection(new)  # the values set over MQTT, over the new file
        if model_changed:
            # the open events end under the old model (their END names it), then the new one runs
            self._emit(self.pipeline.detector.close(self.pipeline.offset_s))
            self.runners = runners
            # offsets go on from the old pipeline's (the audio held back comes right after them)
            self.pipeline = Pipeline(bundle, runners.runner, detection, start_runner=start_runner,
                                     start_offset_s=self.pipeline.offset_s)  # fmt: skip
            log.info("reload: model %s loaded, pipeline rebuilt", bundle.name)
        else:
            # the same model: only its runners may be new (another hop, fast start on or off); the
            # pipeline keeps the bundle it was built with, and so does `runners`
            self.runners = replace(runners, bundle=self.bundle)
            self.pipeline.runner = runners.runner
            if start_runner is not self.pipeline.start_runner:
                self.pipeline.set_start_runner(start_runner)
            # (a label no longer watched is disabled here: its open event ends, END published)
            self._emit(self.pipeline.apply_detection_config(detection))
        watched_before = self._watched()
        self._set_names(new)
        if model_changed or self._watched() != watched_before:
            log.info("reload: %s", self._watch_text())
        input_kept = ""
        if new.audio != self.cfg.audio and self.source_spec == "mic":
            input_kept = self._reopen_input(new, old_cfg)
        if new.logging.level != old_cfg.logging.level:
            logging.getLogger().setLevel(new.logging.level)
            log.info("reload: log level %s", new.logging.level)
        restart_needed = self._needs_restart(old_cfg, new)
        self.cfg = new
        if publisher_key != self._publisher_key:
            self._switch_publisher(old_cfg, new, publisher_key)
        else:
            self.publisher.update_labels(self._watched(), detection.enabled_labels(self._watched()),
                                         self.bundle.display_names,
                                         scores=new.detection.scores_interval > 0)  # fmt: skip
            self.publisher.set_config(self._config_values())
        self._announce(new, forget=False)
        not_applied = [input_kept] if input_kept else []
        if restart_needed:
            not_applied.insert(0, f"{', '.join(restart_needed)}: needs a restart to take effect")
        if not_applied:
            log.warning("reload: configuration applied, except %s", "; ".join(not_applied))
        else:
            log.info("reload: configuration applied")
        self.notifier.ready(self._status_line())

    def _reopen_input(self, new: Config, old_cfg: Config) -> str:
        """SIGHUP with new audio settings: reopen the microphone with them. One that cannot be
        opened (a mistyped or missing device) is logged and the previous settings are reopened, so
        a reload never stops the daemon for it; returns what was not applied ("" when all was).
        If even the previous device cannot be opened now (unplugged meanwhile), it is retried in the
        background as after an unplug."""
        log.info("reload: audio settings changed, reopening the input")
        old_stats = self.source.stats
        for key in self._replaced_input_counts:
            self._replaced_input_counts[key] += int(old_stats.get(key, 0))
        self.source.stop()
        self.cfg = new  # `_open_source` reads self.cfg.audio
        kept = ""
        try:
            self.source = self._open_source()
            self.source.start()
        except SoundmonError as exc:
            log.error("reload: cannot open the new input (%s); reopening the previous one", exc)
            new.audio = old_cfg.audio
            kept = "audio.* (the new input could not be opened; the previous one is in use)"
            self.source = self._open_source()
            self.source.start(retry=True)  # gone too (unplugged meanwhile): retried as after an unplug
        self._gap_seen = self.source.gap_count
        self._gap(0)  # the old input's held audio, then its open events' ENDs
        return kept

    def _reload_overrides(self, new: Config, bundle: ModelBundle, model_changed: bool) -> None:
        """SIGHUP: the values set over MQTT follow a new state_dir (copied there unless it has its
        own overrides.json) and are re-read for a new model (its labels only)."""
        moved = Overrides.in_state_dir(new.storage.state_dir)
        if moved.path.resolve() != self.overrides.path.resolve():
            held = self.overrides.thresholds or self.overrides.enabled
            if held and not moved.path.exists():
                moved = self.overrides.moved_to(moved.path)
                try:
                    moved.save()
                    log.info("reload: the values set over MQTT moved to %s", moved.path)
                except OSError as exc:
                    log.error("reload: cannot write %s (%s): the values set over MQTT stay in %s",
                              moved.path, exc.strerror or exc, self.overrides.path)  # fmt: skip
            self.overrides = moved
            self._load_overrides(new, bundle.labels)
        elif model_changed:
            self._load_overrides(new, bundle.labels)

    def _needs_restart(self, old: Config, new: Config) -> list[str]:
        """Changed keys that a reload does not apply (named in the reload's log line)."""
        out = [f"storage.{key}" for key in ("clips_enabled", "clip_pre_seconds", "clip_post_seconds", "clips_max_mb")
               if getattr(old.storage, key) != getattr(new.storage, key)]  # fmt: skip
        clips_on = old.storage.clips_enabled or new.storage.clips_enabled
        if clips_on and Path(old.storage.state_dir).resolve() != Path(new.storage.state_dir).resolve():
            out.append("storage.state_dir (for detection clips; the spool has moved)")
        if self.source_spec != "mic" and old.audio.block_seconds != new.audio.block_seconds:
            out.append("audio.block_seconds (file source)")
        return out

    def _switch_publisher(self, old_cfg: Config, new: Config, key: tuple) -> None:
        """Apply new mqtt.* / storage.state_dir / storage.spool_max_messages settings.

        Open events end first, through the old publisher, so the broker (and topic) that saw
        their START also sees their END and state OFF. The old publisher then stops as at
        shutdown (publishes `offline`, waits briefly for PUBACKs; what is not acknowledged stays
        in its spool). If the state directory changed, the old spool's undelivered rows are
        moved into the new one (put there first, then deleted from the old one: a crash in
        between can duplicate a detection, never lose it). Then the new publisher connects.
        """
        closing = self.pipeline.detector.close(self.pipeline.offset_s)
        if closing:
            log.info("reload: MQTT settings changed: ending %d open event(s) first",
                     sum(ev.type == "end" for ev in closing))  # fmt: skip
        self._emit(closing)
        # Bounded: this blocks the audio loop (the microphone's ring buffer holds 10 s). It returns
        # as soon as the old broker has acknowledged everything, at once if it is not connected;
        # what is not acknowledged by then (a backlog of more than ~5 s of sending ahead of the
        # ENDs) stays spooled, and the new publisher sends it, to the new broker.
        self.publisher.stop(timeout=RELOAD_FLUSH_SECONDS)
        try:
            publisher = self._make_publisher(new)
        except SoundmonError as exc:  # checked before, so only a file that vanished since
            log.error("reload: cannot start MQTT with the new settings (%s); back to the previous ones", exc)
            new.mqtt, new.storage = old_cfg.mqtt, old_cfg.storage
            publisher, key = self._make_publisher(new), self._publisher_settings(new)
        old_dir, new_dir = Path(old_cfg.storage.state_dir), Path(new.storage.state_dir)
        if old_dir.resolve() != new_dir.resolve():
            self._move_spool(old_dir, new_dir, publisher, new)
        publisher.set_config(self._config_values())
        if new.mqtt.enabled:  # renamed (node id, base topic, discovery prefix): the old topics go
            before = self._read_announced(Path(old_cfg.storage.state_dir) / ANNOUNCED_FILENAME)
            self._retract_previous(before, self._where(new), publisher)
        self.publisher, self._publisher_key = publisher, key
        self.node = new.mqtt.node_id
        if new.mqtt.enabled:
            log.info("reload: MQTT restarted with the new settings (%s:%d as %s, state in %s)",
                     new.mqtt.host, new.mqtt.port, new.mqtt.base, new_dir)  # fmt: skip
        else:
            log.info("reload: MQTT off")
        publisher.start()

    @staticmethod
    def _move_spool(old_dir: Path, new_dir: Path, publisher: Publisher, new: Config) -> None:
        """Move undelivered detections from `old_dir`'s spool into the new publisher's spool."""
        from monitor.spool import SPOOL_FILENAME, Spool, SpoolError

        if not (old_dir / SPOOL_FILENAME).is_file():
            return
        target = publisher.spool  # None when MQTT is off
        moved = 0
        dropped_before = target.dropped if target is not None else 0
        try:
            with Spool(old_dir, max_messages=new.storage.spool_max_messages, logger=log) as old:
                if old.depth and (target is None or not target.persistent):
                    log.warning("reload: %d undelivered detection(s) stay in %s (%s)", old.depth,
                                old_dir / SPOOL_FILENAME, "MQTT is off" if target is None
                                else "the new spool is not on disk")  # fmt: skip
                    return
                for row in old.pending():
                    target.put(row.topic, row.payload, memory_ok=False)  # durable or not at all
                    old.ack(row.id)
                    moved += 1
                left = old.depth
        except (SpoolError, OSError) as exc:
            log.error("reload: moving the spool from %s to %s stopped after %d detection(s) (%s); "
                      "the rest stay in %s", old_dir, new_dir, moved, exc, old_dir / SPOOL_FILENAME)  # fmt: skip
            return
        dropped = target.dropped - dropped_before if target is not None else 0
        if moved or left:
            log.info("reload: moved %d undelivered detection(s) from %s to %s%s%s", moved, old_dir, new_dir,
                     f"; {left} left behind" if left else "",
                     f"; the oldest {dropped} dropped: more than storage.spool_max_messages" if dropped else "")  # fmt: skip


def run_daemon(cfg: Config, bundle: ModelBundle, runner, source: str = "mic", pace: str = "realtime",
               config_path: Path | None = None, model_override: Path | None = None,
               print_events: bool = False, repeat: int = 1, report: Path | None = None) -> int:  # fmt: skip
    """Entry point of `soundmon run` (after config and model have been checked); `report`: write
    the run's timings there as JSON when it ends (`soundmon run --report`, for `soundmon bench`)."""
    logging.getLogger().setLevel(cfg.logging.level)
    daemon = Daemon(cfg, bundle, runner, source=source, pace=pace, config_path=config_path,
                    model_override=model_override, print_events=print_events, repeat=repeat,
                    report=report)  # fmt: skip
    daemon.install_signal_handlers()
    try:
        return daemon.run()
    finally:
        daemon.ignore_stop_signals()
