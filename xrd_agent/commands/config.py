"""``xrd-agent config``: print the defaults, or check a configuration file."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("config", help="print the default configuration or check a file",
                              description="Print every setting with its default (--defaults), or "
                              "validate a TOML configuration file (--check FILE).")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--defaults", action="store_true", help="print the defaults as TOML")
    group.add_argument("--check", metavar="FILE", help="validate FILE; print the merged configuration")
    p.add_argument("--json", action="store_true", help="with --check: print the merged configuration as JSON")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from xrd_agent.config import defaults_toml, load_config

    if args.defaults:
        sys.stdout.write(defaults_toml())
        return 0
    config = load_config(args.check)  # raises ConfigError: the CLI prints it and exits 2
    from xrd_agent.errors import XrdAgentError
    from xrd_agent.service.engines import choose
    from xrd_agent.service.instrument import Instrument

    try:
        Instrument(config)
        engine = choose(config)
    except XrdAgentError as exc:
        print(f"{args.check}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(config.to_dict(), indent=1))
    else:
        print(f"{args.check}: valid (watch {config.watch.directory}, state {config.service.state_dir}, "
              f"pub {config.publish.pub_endpoint}, engine {engine})")
    return 0
