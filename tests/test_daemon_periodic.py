"""The daemon loop's clock-driven messages: the watchdog ping, `<base>/level` and `<base>/stats`
come when each is due, though the loop only looks at every one of them once the earliest is due
(`Daemon._periodic` runs once per audio block). No broker, no source: a stand-in publisher, a
stand-in notifier and a clock the test moves."""

from __future__ import annotations

from monitor import daemon as daemon_module
from monitor.config import load_config
from monitor.runner import open_model
from tests.daemon_helpers import write_config


class _Publisher:
    """Keeps the level messages and counts the stats; the rest of its surface does nothing."""

    connected = False
    spool_depth = 0
    state = "disabled"

    def __init__(self) -> None:
        self.levels: list[float] = []
        self.stats = 0

    def publish_level(self, payload: dict) -> None:
        self.levels.append(payload["dbfs"])

    def set_config(self, values: dict) -> None:
        pass


class _Notifier:
    def __init__(self) -> None:
        self.pings = 0

    def watchdog_interval(self) -> float:
        return 2.0  # WATCHDOG_USEC=4 s

    def watchdog(self) -> None:
        self.pings += 1

    def status(self, text: str) -> None:
        pass


def test_level_stats_and_watchdog_come_when_due_and_a_reload_applies_new_intervals(tiny_bundle, tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(daemon_module.time, "monotonic", lambda: now[0])
    path = write_config(tmp_path / "c.yaml", detection={"level_interval": 5}, mqtt={"stats_interval": 60})
    bundle, runner = open_model(tiny_bundle, 1)
    pub, notifier = _Publisher(), _Notifier()
    d = daemon_module.Daemon(load_config(path), bundle, runner, source="x.wav", publisher=pub, notifier=notifier)
    monkeypatch.setattr(d, "_publish_stats", lambda: setattr(pub, "stats", pub.stats + 1))  # (the payload's sources are not here)

    def advance(seconds: float, windows: bool = True) -> None:
        """Run the loop's check 20 times per second for `seconds`, a window level every 0.5 s."""
        for i in range(int(seconds * 20)):
            now[0] += 0.05
            if windows and i % 10 == 9:
                d._level_sum, d._level_n = d._level_sum + 0.01, d._level_n + 1  # -20 dBFS
            d._periodic()

    def counts() -> tuple[int, int, int]:
        return len(pub.levels), pub.stats, notifier.pings

    d._periodic()  # the first pass: the ping and the stats are due at once; no level yet
    assert counts() == (0, 1, 1)
    advance(12)  # levels at 0.5, 5.5 and 10.5 s (each once a window has a level), a ping every 2 s
    assert counts() == (3, 1, 6)
    advance(10, windows=False)  # no new window: the last one's level goes out at 15.5 s, then none
    assert counts() == (4, 1, 11)
    advance(0.5)  # a window again: its level is overdue, so it goes out at once
    assert counts() == (5, 1, 11)
    advance(50)  # the second stats message, 60 s after the first
    assert counts() == (14, 2, 36)
    # a reload with a shorter interval: it applies from the next block (reload() resets the
    # moment the loop next looks), not after the old interval has run out
    d.cfg.detection.level_interval = 1
    d._periodic_due = -float("inf")
    advance(3)
    assert counts() == (17, 2, 37)
