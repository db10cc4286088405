"""``xrd-agent status``: is the agent healthy? For scripts, monitors and people.

Exit status 0: ready; 1: running but degraded (the reasons are printed); 2: unreachable.
"""

from __future__ import annotations

import argparse

from xrd_agent.commands import _agent

EXIT_READY, EXIT_DEGRADED, EXIT_UNREACHABLE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status", help="is the agent healthy? exit 0 ready, 1 degraded, 2 unreachable",
        description="Ask a running agent for its health (control op `health`) and print state, queue, "
                    "last scan age, model and library versions, and what is wrong when it is degraded. "
                    "Exit status 0: ready; 1: degraded, starting or stopping; 2: no agent answers.")
    _agent.add_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the health reply as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xrd_agent import messages

    health = _agent.request(args, "status", lambda client: client.health())
    if health is None:
        return EXIT_UNREACHABLE
    if args.json:
        print(messages.dumps(health))
    else:
        print(describe(health))
    return EXIT_READY if health["healthy"] else EXIT_DEGRADED


def describe(health: dict) -> str:
    age = health["last_scan_age_s"]
    lines = [
        f"state          {health['state']}",
        f"queue          {health['queue_depth']} of {health['queue_size']}",
        f"last scan      {'none yet' if age is None else _ago(age)}",
        f"last seq       {health['last_seq']}",
        f"uptime         {_ago(health['uptime_s']).removesuffix(' ago')}",
        f"model          {health['model_version'] or '-'}",
        f"library        {health['library_version'] or '-'}",
    ]
    lines += [f"problem        {reason}" for reason in health["reasons"]]
    return "\n".join(lines)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"
