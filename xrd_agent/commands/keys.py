"""``xrd-agent keys generate``: CurveZMQ key pairs for the agent and its robots.

Writes ``server.key`` / ``server.key_secret`` (once), one client pair per ``--name``, and a
copy of each client's public key in ``DIR/allowed`` (the allow-list). Secret files are
mode 0600 and never overwritten.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="create CurveZMQ keys that encrypt the stream and admit only known robots",
        description="Manage the CurveZMQ keys of the PUB and control sockets.",
    )
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    generate = sub.add_parser(
        "generate",
        help="create the server key pair (if missing) and a client key pair, and allow the client",
        description=(
            "Create DIR/server.key(_secret) if missing, DIR/NAME.key(_secret) for one client, and copy "
            "NAME.key into DIR/allowed/. Give NAME.key_secret and server.key to the robot; set "
            "publish.curve_secret_key = DIR/server.key_secret and publish.curve_allowed_dir = DIR/allowed."
        ),
    )
    generate.add_argument("--dir", required=True, metavar="DIR", help="folder for the key files")
    generate.add_argument("--name", default="client", metavar="NAME",
                          help="client name, e.g. the robot's (default: client)")
    generate.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from xrd_agent.service.security import generate_keys

    keys = generate_keys(args.dir, args.name)
    made = "created" if keys.server_created else "kept existing"
    print(f"server key pair ({made}): {keys.server_secret} (secret, stays with the agent), "
          f"{keys.server_public} (public, give to robots)")
    print(f"client key pair: {keys.client_secret} (secret, give to the robot '{args.name}'), "
          f"{keys.client_public}")
    print(f"allowed: {keys.allowed_public}")
    print("\nagent configuration:\n[publish]")
    print(f'curve_secret_key = "{keys.server_secret.resolve()}"')
    print(f'curve_allowed_dir = "{keys.allowed_public.parent.resolve()}"')
    print(f"\nrobot: xrd-agent subscribe --client-key {keys.client_secret} --server-key {keys.server_public}")
    return 0
