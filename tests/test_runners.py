"""monitor.runners.build_runners: the one place the daemon opens its model runners, at start-up
and at a SIGHUP (what is reused, what is opened anew). Runs the shipped urban10 bundle, which
has a streaming model and a start model."""

from __future__ import annotations

from monitor.config import DetectionConfig
from monitor.runner import open_model
from monitor.runners import Runners, build_runners
from tests.paths import need_shipped_model


def detection(**values) -> DetectionConfig:
    return DetectionConfig.model_validate(values)


def test_start_up_keeps_the_cli_runner_and_adds_the_start_model() -> None:
    path = need_shipped_model()
    bundle, runner = open_model(path, 1, 0.5)
    opened = Runners(path, 1, 0.5, bundle, runner)
    on = build_runners(path, 1, detection(), reuse=opened)
    assert (on.bundle, on.runner) == (bundle, runner) and on.start_runner is not None
    off = build_runners(path, 1, detection(fast_start_threshold=None), reuse=opened)
    assert off.runner is runner and off.start_runner is None
    fresh = build_runners(path, 1, detection())
    assert fresh.runner is not runner and fresh.start_runner is not None
    assert (fresh.path, fresh.threads, fresh.hop_seconds) == (path, 1, 0.5)


def test_reload_reuses_what_did_not_change() -> None:
    path = need_shipped_model()
    running = build_runners(path, 1, detection())
    same = build_runners(path, 1, detection(hold_seconds=2.0), reuse=running)
    assert (same.runner, same.start_runner) == (running.runner, running.start_runner)
    off = build_runners(path, 1, detection(fast_start_threshold=None), reuse=running)
    assert off.runner is running.runner and off.start_runner is None
    back_on = build_runners(path, 1, detection(), reuse=off)
    assert back_on.runner is running.runner and back_on.start_runner not in (None, running.start_runner)
    for changed in (build_runners(path, 2, detection(), reuse=running),
                    build_runners(path, 1, detection(hop_seconds=0.25), reuse=running)):  # fmt: skip
        assert changed.runner is not running.runner and changed.start_runner is not running.start_runner
    assert build_runners(path, 1, detection(hop_seconds=0.25), reuse=running).hop_seconds == 0.25
