"""The daemon's batching of audio blocks (`Daemon._feed`): it hands the held audio to the pipeline
at the very blocks where the pipeline's own answer (`samples_until_window`) says a result is
complete; after a gap, a reload with another hop and new detection settings alike. No broker, no
source: stand-ins and blocks of random sizes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from monitor.config import load_config
from monitor.daemon import Daemon
from monitor.runner import open_model
from tests.daemon_helpers import StandIn, write_config


def test_batches_end_where_the_pipeline_says_through_gaps_and_reloads(tiny_bundle, tmp_path):
    # the config names the model the daemon runs: a reload reopens it (here at another hop)
    path = write_config(tmp_path / "c.yaml", detection={"hop_seconds": 0.5}, model={"path": str(tiny_bundle)})
    bundle, runner = open_model(tiny_bundle, 1)
    d = Daemon(load_config(path), bundle, runner, source="x.wav", config_path=path, publisher=StandIn(),
               notifier=StandIn())  # fmt: skip
    d.source = SimpleNamespace(gap_count=0, last_gap_samples=0, health="ok", stats={})
    rng = np.random.default_rng(7)
    fed = 0

    def feed(blocks: int) -> None:
        nonlocal fed
        for _ in range(blocks):
            block = rng.uniform(-0.1, 0.1, int(rng.integers(1, 1200))).astype(np.float32)
            due = d._held_samples + len(block) >= d.pipeline.samples_until_window()
            d._feed(block)
            assert (d._held_samples == 0) == due
            fed += due

    feed(300)
    d.source.gap_count, d.source.last_gap_samples = 1, 4000  # the source lost audio
    d._handle_gap()
    feed(300)
    write_config(path, detection={"hop_seconds": 0.25}, model={"path": str(tiny_bundle)})  # windows twice as often
    d.reload()
    assert d.pipeline.detection.hop_seconds == 0.25
    feed(300)
    d._apply_commands([])  # (nothing valid: the settings stay)
    feed(100)
    assert fed > 100 and d.pipeline.stats.windows > 50
