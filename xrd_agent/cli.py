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

from xrd_agent import __version__, tfimport
from xrd_agent.errors import XrdAgentError

#: Optional dependencies and the extra that installs each (pyproject.toml): the base install
#: is the client and the message contract only.
EXTRA_OF = {
    "tensorflow": "agent", "keras": "agent", "watchdog": "agent", "xylib": "agent", "scipy": "agent",
    "matplotlib": "agent", "pymatgen": "library", "spglib": "library", "core_mof": "library",
    "tqdm": "library", "sklearn": "eval",
}

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
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show TensorFlow's own start-up lines (CUDA, CPU features) on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"xrd_agent.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if not args.verbose:
        tfimport.quiet()
    try:
        return int(args.func(args) or 0)
    except XrdAgentError as exc:
        print(f"xrd-agent {args.command}: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"xrd-agent {args.command}: needs {exc.name}, which this installation lacks; "
              f"install it with: pip install 'xrd-agent[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
