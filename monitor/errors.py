"""Errors that end a command with one clear line on stderr and a non-zero exit (no traceback)."""

from __future__ import annotations


class SoundmonError(Exception):
    """A problem the user can fix; `str()` is the one-line message, `exit_code` the process status."""

    exit_code = 1


class ConfigError(SoundmonError):
    """The configuration file is missing, unreadable or invalid."""

    exit_code = 2


class BundleError(SoundmonError):
    """The model bundle is missing, corrupt or incompatible with this soundmon."""

    exit_code = 2


class AudioFileError(SoundmonError):
    """An audio file cannot be opened or decoded."""

    exit_code = 1


class DeviceError(SoundmonError):
    """No usable audio input device."""

    exit_code = 1
