"""``xrd-agent result SAMPLE``: every result the agent recorded for one sample, newest first
(control op ``by_sample``): identifications with their Top-5, alerts, rejections, reviews.

Exit status 0 when the sample has results, 1 when it has none, 2 when no agent answers.
"""

from __future__ import annotations

import argparse
import sys

from xrd_agent.commands import _agent


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "result", help="print every result recorded for a sample, newest first",
        description="Print what the agent recorded for SAMPLE (identifications, alerts, rejections and "
                    "chemists' reviews), newest first. Exit status 0: found; 1: the sample has no "
                    "results; 2: no agent answers.")
    parser.add_argument("sample", metavar="SAMPLE", help="sample id as the instrument writes it")
    _agent.add_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print each message as one JSON line")
    parser.add_argument("--limit", type=int, default=100, metavar="N", help="at most N messages (default 100)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xrd_agent import messages
    from xrd_agent.commands.subscribe import describe
    from xrd_agent.errors import ConfigError

    if not 1 <= args.limit <= 1000:
        raise ConfigError("--limit must be from 1 to 1000")
    reply = _agent.request(args, "result", lambda client: client.by_sample(args.sample, args.limit))
    if reply is None:
        return 2
    found = reply["messages"]
    for message in found:
        print(messages.dumps(message) if args.json else describe(message))
    if not found:
        print(f"xrd-agent result: no results for sample {args.sample!r}", file=sys.stderr)
        return 1
    if reply["more"] and not args.json:
        print(f"(older results left out; raise --limit)", file=sys.stderr)
    return 0
