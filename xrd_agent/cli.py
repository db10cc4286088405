"""The ``xrd-agent`` command: parses arguments and delegates.

Each subcommand lives in ``xrd_agent/commands/<name>.py`` with a ``register(subparsers)``
function; heavy imports (TensorFlow, pymatgen) happen inside the handlers, so
``xrd-agent inspect`` starts in a blink. Nothing imports this module.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from xrd_agent import __version__
from xrd_agent.errors import XrdAgentError

#: Subcommand modules under xrd_agent.commands, in the order ``--help`` lists them.
COMMANDS = (
    "inspect",
    "profiles",
    "identify",
    "library",
    "noise",
    "train",
    "evaluate",
    "run",
    "config",
    "subscribe",
    "status",
    "result",
    "expect",
    "demo",
    "keys",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xrd-agent",
        description="Identify MOFs in Bruker D8 powder scans and publish the results over ZeroMQ.",
    )
    parser.add_argument("--version", action="version", version=f"xrd-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"xrd_agent.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"xrd_agent.commands.{name}":
                continue  # subcommand not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except XrdAgentError as exc:
        print(f"xrd-agent {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
