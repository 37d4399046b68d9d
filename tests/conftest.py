"""Fixtures shared by the whole suite, registered once per session, and the test tiers.

- `broker`, `broker_factory`: a real Mosquitto child process (tests/broker.py)
- `tiny_bundle`, `tiny_stream_bundle`: tiny real int8 models trained on the bundled clips,
  committed in tests/data/bundles (tests/fixtures_model.py; `python -m tools.make_test_bundles`)
- `pulse_sink`: PulseAudio null sink captured through PortAudio (tests/pulse.py)

Tiers (`make test` runs both, `make test-fast` = `pytest -m "not integration"` the unit tests):
a test is marked `integration` here when it uses one of `INTEGRATION_FIXTURES` (a broker,
PulseAudio) or lives in one of `INTEGRATION_MODULES`; other tests that start the daemon, Home
Assistant or TensorFlow themselves carry `@pytest.mark.integration`. The tiny bundles are
committed files, not trainings: a unit test may score with them in-process or through `soundmon
classify`. The unit tests run in seconds and never import TensorFlow: in a run that leaves the
integration tests out, a test that does is failed with its name.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest_plugins = ["tests.broker", "tests.fixtures_model", "tests.pulse"]

# Fixtures that start a process: every test using one is an integration test.
INTEGRATION_FIXTURES = frozenset({"broker", "broker_factory", "pulse_sink"})

# Modules that are integration tests throughout (training, TensorFlow, wheel builds, Home
# Assistant, the daemon as a child process, under seccomp or on PulseAudio); a run without
# integration tests does not even import them (test_distill imports TensorFlow at module level).
INTEGRATION_MODULES = frozenset({
    "test_daemon.py",  # the daemon as a child process
    "test_daemon_live.py",  # the daemon on PulseAudio and a real notify socket
    "test_daemon_refusals.py",  # the daemon refusing to start
    "test_distill.py",  # trains distilled students (TensorFlow)
    "test_homeassistant.py",  # a real Home Assistant core and the daemon
    "test_syscall_filter.py",  # the daemon under the unit's seccomp filter
    "test_training_model.py",  # trains and exports models (TensorFlow)
    "test_transfer.py",  # YAMNet transfer training (TensorFlow)
    "test_wheel_install.py",  # builds and installs the wheel in a fresh venv
    "test_yamnet.py",  # rebuilds YAMNet in TensorFlow against the export
})


def _fast_run(config: pytest.Config) -> bool:
    """The integration tests are deselected (`-m "not integration"`, what `make test-fast` runs)."""
    return " ".join(config.getoption("markexpr", "").split()) == "not integration"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if _fast_run(config) and collection_path.name in INTEGRATION_MODULES:
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in INTEGRATION_MODULES or INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _unit_tests_do_not_import_tensorflow(request: pytest.FixtureRequest):
    """In a run without the integration tests: a test that imports TensorFlow fails (it belongs
    to the integration tier: mark it `@pytest.mark.integration`)."""
    before = "tensorflow" in sys.modules
    yield
    if _fast_run(request.config) and not before and "tensorflow" in sys.modules:
        pytest.fail(f"{request.node.nodeid} imported TensorFlow: mark it @pytest.mark.integration", pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run without the integration tests that imported TensorFlow anyway (at collection, say)
    fails: the unit tier must run where only the runtime is installed."""
    if _fast_run(session.config) and "tensorflow" in sys.modules and exitstatus == 0:
        session.config.get_terminal_writer().line(
            "ERROR: TensorFlow was imported during a run without the integration tests", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
