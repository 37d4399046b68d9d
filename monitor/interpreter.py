"""The TFLite interpreter, wherever it comes from, and quiet construction of it.

Its own module so that both runners (`monitor.runner` for whole windows, `monitor.stream_runner`
for a streaming model) import it without importing each other.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from monitor.errors import BundleError

__all__ = ["load_interpreter_class", "quiet_native_stderr"]


def load_interpreter_class() -> tuple[type, str]:
    """(Interpreter class, package name) from the first TFLite runtime that imports."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter, "tflite_runtime"
    except ImportError:
        raise BundleError(
            "no TFLite interpreter: install ai-edge-litert (64-bit) or tflite-runtime (32-bit Pi OS)"
        ) from None


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hide the runtime's C++ banner ("INFO: Created TensorFlow Lite XNNPACK delegate") on fd 2.

    It is printed once per interpreter and is noise in a one-line-per-event log; real load
    errors still arrive as Python exceptions.
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
