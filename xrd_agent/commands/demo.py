"""``xrd-agent demo``: the agent on a simulated D8 with a printing subscriber (``make demo``)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the agent on a simulated D8 with a printing subscriber",
        description="Start `xrd-agent run` on a temporary export folder, let a simulated D8 export "
        "scans (RAW4.00, BRML, .xy; a failed synthesis, a missing expected phase, a re-export, an "
        "unreadable file...), print what a subscriber receives, then a summary.",
    )
    p.add_argument("--scans", type=int, default=10, metavar="N", help="how many exports (default 10, minimum 6)")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep the files, ledger and log afterwards")
    p.add_argument("--engine", choices=("auto", "cnn", "cosine"), default="auto",
                   help="identification engine (auto: the trained model when installed)")
    p.add_argument("--model", metavar="DIR", help="trained model folder (default: the shipped one)")
    p.add_argument("--pause", type=float, default=0.6, metavar="S", help="seconds between exports")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from xrd_agent.errors import ConfigError
    from xrd_agent.testing.demo import run_demo

    if args.scans < 6:
        raise ConfigError("--scans must be at least 6 (the demo's cases)")
    return run_demo(scans=args.scans, keep=args.keep, engine=args.engine, model=args.model, pause_s=args.pause)
