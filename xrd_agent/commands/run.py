"""``xrd-agent run``: the agent service (watch, identify, record, publish).

Flags override the configuration file, which overrides the built-in defaults
(``xrd-agent config --defaults`` prints them); it starts without any file at all.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="run the agent service: watch the export folder, identify, publish",
        description="Run the xrd-agent service in the foreground (systemd: Type=notify). "
        "SIGTERM drains the queue and stops; SIGHUP reloads the configuration.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML configuration (see `xrd-agent config --defaults`)")
    p.add_argument("--watch", metavar="DIR", help="export folder to watch [watch.directory]")
    p.add_argument("--state", metavar="DIR", help="state directory for the ledger [service.state_dir]")
    p.add_argument("--pub", metavar="ENDPOINT", help="ZeroMQ PUB endpoint [publish.pub_endpoint]")
    p.add_argument("--control", metavar="ENDPOINT", help="control endpoint [publish.control_endpoint]")
    p.add_argument("--profile", metavar="NAME", help="firmware profile name or auto [watch.profile]")
    p.add_argument("--polling", action="store_true", help="poll instead of inotify (SMB/NFS shares) [watch.mode]")
    p.add_argument("--recursive", action="store_true", help="watch sub-folders too [watch.recursive]")
    p.add_argument("--model", metavar="DIR", help="trained model folder [model.model_dir]")
    p.add_argument("--library", metavar="DIR", help="reference library folder [model.library_dir]")
    p.add_argument("--engine", choices=("auto", "cnn", "cosine"), help="identification engine [model.engine]")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="[service.log_level]")
    p.set_defaults(func=handle)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, as a nested dict in the TOML file's shape."""
    out: dict[str, dict[str, Any]] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None and value is not False:
            out.setdefault(section, {})[key] = value

    put("watch", "directory", args.watch)
    put("service", "state_dir", args.state)
    put("publish", "pub_endpoint", args.pub)
    put("publish", "control_endpoint", args.control)
    put("watch", "profile", args.profile)
    put("watch", "mode", "polling" if args.polling else None)
    put("watch", "recursive", True if args.recursive else None)
    put("model", "model_dir", args.model)
    put("model", "library_dir", args.library)
    put("model", "engine", args.engine)
    put("service", "log_level", args.log_level)
    return out


def handle(args: argparse.Namespace) -> int:
    from xrd_agent.service.daemon import run_service

    return run_service(args.config, overrides_from(args))
