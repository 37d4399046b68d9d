"""Fixtures shared by the whole suite, registered once per session.

- `broker`, `broker_factory`: a real Mosquitto child process (tests/broker.py)
- `tiny_bundle`: a tiny real int8 model trained on the bundled clips (tests/fixtures_model.py)
- `pulse_sink`: PulseAudio null sink captured through PortAudio (tests/pulse.py)
"""

pytest_plugins = ["tests.broker", "tests.fixtures_model", "tests.pulse"]
