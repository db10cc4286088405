"""Reaching a running agent's control socket from a command (status, result, expect, subscribe)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: How long a command waits for the agent before calling it unreachable.
DEFAULT_TIMEOUT_S = 3.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML configuration to take the endpoints and keys from")
    parser.add_argument("--control", metavar="ENDPOINT", help="control endpoint (default: publish.control_endpoint)")
    parser.add_argument("--state", metavar="DIR",
                        help="take the endpoints a running agent wrote to DIR/endpoints.json")
    parser.add_argument("--client-key", metavar="FILE", help="CURVE: this client's .key_secret file")
    parser.add_argument("--server-key", metavar="FILE", help="CURVE: the agent's public server.key file")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"seconds to wait for the agent (default {DEFAULT_TIMEOUT_S:g})")


def endpoints(args: argparse.Namespace) -> dict[str, str]:
    """``{"pub": ..., "control": ...}`` from the flags, endpoints.json or the configuration."""
    from xrd_agent.config import load_config
    from xrd_agent.errors import ConfigError

    publish = load_config(getattr(args, "config", None)).publish
    found = {"pub": publish.pub_endpoint, "control": publish.control_endpoint}
    state = getattr(args, "state", None)
    if state:
        path = Path(state) / "endpoints.json"
        try:
            data = json.loads(path.read_text())
            found.update({k: str(data[k]) for k in ("pub", "control")})
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"cannot read {path} ({exc}); is the agent running with --state {state}?") from None
    if getattr(args, "control", None):
        found["control"] = args.control
    if getattr(args, "pub", None):
        found["pub"] = args.pub
    return found


def curve_keys(args: argparse.Namespace) -> Any:
    from xrd_agent.errors import ConfigError

    if not (getattr(args, "client_key", None) or getattr(args, "server_key", None)):
        return None
    if not (args.client_key and args.server_key):
        raise ConfigError("CURVE needs both --client-key (your .key_secret) and --server-key (server.key)")
    from xrd_agent.service.security import CurveClientKeys

    return CurveClientKeys.from_files(args.client_key, args.server_key)


def control_client(args: argparse.Namespace) -> Any:
    from xrd_agent.client import ControlClient

    return ControlClient(endpoints(args)["control"], curve_client_keys=curve_keys(args),
                         timeout_s=getattr(args, "timeout", None) or DEFAULT_TIMEOUT_S)


def unreachable(endpoint: str, exc: Exception) -> str:
    return (f"no xrd-agent answers at {endpoint} ({exc}); is it running (systemctl status xrd-agent) "
            "and is this the right --control endpoint?")


def request(args: argparse.Namespace, command: str, call: Callable[[Any], dict[str, Any]]) -> dict[str, Any] | None:
    """One control request for ``xrd-agent COMMAND``: the reply, or None once it has said on
    stderr that no agent answers. A refusal (a bad name, an out-of-range value) is a
    :class:`ConfigError`, so the command exits 2 with the agent's reason."""
    from xrd_agent.errors import ConfigError, ControlError

    client = control_client(args)
    try:
        return call(client)
    except ControlError as exc:
        if "refused" in str(exc):
            raise ConfigError(str(exc)) from None
        print(f"xrd-agent {command}: {unreachable(client.endpoint, exc)}", file=sys.stderr)
        return None
    finally:
        client.close()
