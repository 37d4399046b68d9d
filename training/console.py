"""Progress lines of the training and evaluation commands: one line each, on stderr."""

from __future__ import annotations

import sys

__all__ = ["log"]


def log(msg: str) -> None:
    """Print one progress line to stderr at once (stdout stays for a command's results)."""
    print(msg, file=sys.stderr, flush=True)
