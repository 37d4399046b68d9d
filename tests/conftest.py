"""Shared fixtures: a real Mosquitto broker per test (tests/broker.py)."""

pytest_plugins = ["tests.broker"]
