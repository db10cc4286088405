"""``xrd-agent subscribe``: follow an agent's stream from a terminal, the way a robot does.

Uses :class:`xrd_agent.client.Subscriber`, so gaps are replayed and duplicates dropped
here exactly as in robot software. ``--json`` prints each message as published, one per
line, for piping into other tools.
"""

from __future__ import annotations

import argparse
import sys
import time

from xrd_agent import messages


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "subscribe",
        help="print the agent's identifications, alerts and status as they are published",
        description=(
            "Subscribe to an xrd-agent and print one line per message (seq, topic, sample, Top-5 with "
            "probabilities, flags, alert reasons). Missed messages are replayed through the control "
            "socket. Exit status 0 when --count messages arrived (or on Ctrl-C / --timeout without "
            "--count), 1 when --timeout passed before --count messages, 2 when no agent answers at "
            "the control endpoint."
        ),
    )
    parser.add_argument("--config", metavar="FILE",
                        help="TOML configuration to take the endpoints and keys from")
    parser.add_argument("--pub", metavar="ENDPOINT", help="PUB endpoint (default: publish.pub_endpoint)")
    parser.add_argument("--control", metavar="ENDPOINT",
                        help="control endpoint (default: publish.control_endpoint)")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC", choices=messages.TOPICS,
                        default=list(messages.DURABLE_TOPICS),
                        help="topics to print (default: all but heartbeats; choices: "
                             f"{', '.join(messages.TOPICS)})")
    parser.add_argument("--json", action="store_true", help="print each message as one JSON line")
    parser.add_argument("--since", type=int, metavar="SEQ",
                        help="first print every stored message after SEQ (0: all the ledger holds)")
    parser.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    parser.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds")
    parser.add_argument("--client-key", metavar="FILE", help="CURVE: this client's .key_secret file")
    parser.add_argument("--server-key", metavar="FILE", help="CURVE: the agent's public server.key file")
    parser.add_argument("--strict", action="store_true",
                        help="stop with an error on an invalid message or an unrecoverable gap")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xrd_agent.client import Subscriber
    from xrd_agent.config import load_config
    from xrd_agent.errors import ConfigError

    publish = load_config(args.config).publish
    keys = None
    if args.client_key or args.server_key:
        if not (args.client_key and args.server_key):
            raise ConfigError("CURVE needs both --client-key (your .key_secret) "
                              "and --server-key (server.key)")
        from xrd_agent.service.security import CurveClientKeys

        keys = CurveClientKeys.from_files(args.client_key, args.server_key)
    if args.count is not None and args.count < 1:
        raise ConfigError("--count must be at least 1")
    if args.since is not None and args.since < 0:
        raise ConfigError("--since must be 0 or more")
    control = args.control or publish.control_endpoint
    if not _reachable(control, keys):
        return 2
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    printed = 0
    out = sys.stdout
    with Subscriber(args.pub or publish.pub_endpoint, args.control or publish.control_endpoint,
                    topics=args.topics, curve_client_keys=keys, since_seq=args.since,
                    strict=args.strict) as sub:
        while args.count is None or printed < args.count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            event = sub.receive(remaining)
            if event is None:
                continue
            out.write((messages.dumps(event.message) if args.json else describe(event.message)) + "\n")
            out.flush()
            printed += 1
    if args.count is not None and printed < args.count:
        print(f"xrd-agent subscribe: {printed} of {args.count} messages before the timeout", file=sys.stderr)
        return 1
    return 0


def _reachable(endpoint: str, keys: object, timeout_s: float = 3.0) -> bool:
    """Ping the agent first: a subscriber to nobody would wait in silence for ever."""
    from xrd_agent.client import ControlClient
    from xrd_agent.commands._agent import unreachable
    from xrd_agent.errors import ControlError

    client = ControlClient(endpoint, curve_client_keys=keys, timeout_s=timeout_s)
    try:
        client.ping()
        return True
    except ControlError as exc:
        print(f"xrd-agent subscribe: {unreachable(endpoint, exc)}", file=sys.stderr)
        return False
    finally:
        client.close()


def _sample(message: dict) -> str:
    return message.get("sample_id") or "-"


def _determinations(candidate: dict) -> str:
    """`` (FIQCEN)`` or, for a material the model split over determinations, `` (FIQCEN +2)``."""
    more = len([d for d in candidate.get("determinations", []) if d["probability"] >= 0.001]) - 1
    return f" ({candidate['refcode']}" + (f" +{more}" if more > 0 else "") + ")"


def describe(message: dict) -> str:
    """One readable line per message."""
    topic, seq = message["topic"], message["seq"]
    if topic == messages.IDENTIFICATION:
        result = message["result"]
        top = " | ".join(f"{c['name']} {c['probability']:.3f}" + _determinations(c) for c in result["top"])
        extra = "".join(f" [{flag}]" for flag in result["flags"])
        if message["duplicate_of"] is not None:
            extra += f" (re-export of #{message['duplicate_of']})"
        return f"#{seq} identification {_sample(message)}: {top}{extra}"
    if topic == messages.ALERT:
        evidence = message["evidence"]
        facts = []
        if "detail" in evidence:  # names the materials in words
            facts.append(evidence["detail"])
        else:
            if "expected_phases" in evidence:
                facts.append("expected " + ", ".join(evidence.get("expected_materials", evidence["expected_phases"])))
            if "found" in evidence:
                facts.append("found " + ", ".join(evidence.get("found_names", evidence["found"])))
        where = _sample(message) if message["sample_id"] or not message["path"] else message["path"]
        return (f"#{seq} ALERT {message['severity'].upper()} {message['reason']} {where}"
                + (": " + "; ".join(facts) if facts else ""))
    if topic == messages.REJECTED:
        return f"#{seq} rejected {message['path']} ({message['error']}): {message['reason']}"
    if topic == messages.STATUS:
        counters = " ".join(f"{k}={v}" for k, v in message["counters"].items())
        detail = f": {message['detail']}" if message["detail"] else ""
        return f"#{seq} status {message['state']}{detail}" + (f" ({counters})" if counters else "")
    if topic == messages.REVIEW:
        what = f"{message['name']} ({message['refcode']})" if message["refcode"] else ""
        who = f" by {message['reviewer']}" if message["reviewer"] else ""
        return (f"#{seq} review of #{message['of_seq']} {_sample(message)}: {message['decision']} {what}".rstrip()
                + who + (f": {message['comment']}" if message["comment"] else ""))
    return (f"heartbeat last_seq={message['last_seq']} uptime={message['uptime_s']:.0f}s "
            f"queue={message['queue_depth']}")
