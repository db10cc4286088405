"""TensorFlow without its C++ start-up lines on stderr (cuInit, cudart stub, CPU features,
oneDNN), unless the user asked for them (``xrd-agent --verbose``).

``TF_CPP_MIN_LOG_LEVEL`` must be set before TensorFlow is imported, and some lines are
written before TensorFlow's logging reads it ("All log messages before
absl::InitializeLog() ..."), so a quiet import also points file descriptor 2 at
/dev/null for the import itself. Only the CLI turns this on (:func:`quiet`), and it
carries over to the agent processes it starts through the environment.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

#: Set to "1" by :func:`quiet`: TensorFlow is then imported with stderr silenced.
QUIET_ENV = "XRD_AGENT_QUIET_TF"


def quiet() -> None:
    """Silence TensorFlow's C++ logging in this process and the ones it starts."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # errors too: cuInit on a CPU-only machine is one
    os.environ.setdefault(QUIET_ENV, "1")


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded, closed): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow() -> ModuleType:
    """``import tensorflow`` (and keras), quietly when :func:`quiet` was called."""
    if "tensorflow" in sys.modules or os.environ.get(QUIET_ENV) != "1":
        return importlib.import_module("tensorflow")
    with _stderr_silenced():
        tf = importlib.import_module("tensorflow")
        importlib.import_module("keras")
    return tf
