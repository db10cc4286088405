"""structlog set-up for the daemon: JSON lines for journald and files, colour for people.

Under systemd (``JOURNAL_STREAM`` set) or whenever stderr is not a terminal, every event
is one JSON object per line (journald and log shippers parse it); on a terminal it is
structlog's readable console renderer. Standard-library loggers are routed through the
same renderer.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

import structlog


def wants_json(stream: TextIO | None = None, environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    stream = stream or sys.stderr
    if env.get("JOURNAL_STREAM"):
        return True
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return True


def configure(level: str = "info", *, json: bool | None = None, stream: TextIO | None = None) -> None:
    """Configure structlog once per process (the daemon calls it before anything logs)."""
    stream = stream or sys.stderr
    use_json = wants_json(stream) if json is None else json
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    # Libraries that log through the standard library (the model engine, pyzmq's
    # authenticator, TensorFlow's Python side) come out in the same format.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=renderer,
        foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.processors.add_log_level,
                           structlog.processors.TimeStamper(fmt="iso", utc=True)],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if use_json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
