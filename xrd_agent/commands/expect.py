"""``xrd-agent expect SAMPLE PHASE...``: tell the agent which phases a sample should contain
(control op ``expect``); a scan of it without them raises ``expected_phase_missing``.
``--elements`` passes the sample's elements along for the identification to use."""

from __future__ import annotations

import argparse

from xrd_agent.commands import _agent

def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "expect", help="tell the agent which phases (and elements) a sample should contain",
        description="Record the phases SAMPLE should contain; when its scan does not show one of them "
                    "in the Top-k, the agent publishes an expected_phase_missing alert. No PHASE forgets "
                    "the expectation. Exit status 0: recorded; 2: refused or no agent answers.")
    parser.add_argument("sample", metavar="SAMPLE", help="sample id as the instrument writes it")
    parser.add_argument("phases", metavar="PHASE", nargs="*", help="expected phases (names or refcodes)")
    parser.add_argument("--elements", nargs="+", metavar="EL", help="elements the sample was made from, e.g. Zn C N H")
    parser.add_argument("--top-k", type=int, default=5, metavar="K",
                        help="an expected phase must rank within K (default 5)")
    _agent.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xrd_agent.errors import ConfigError

    if not 1 <= args.top_k <= 50:
        raise ConfigError("--top-k must be from 1 to 50")
    elements = None
    if args.elements:
        from xrd_agent.elements import clean_elements

        try:
            elements = list(clean_elements(",".join(args.elements)))
        except ValueError as exc:
            raise ConfigError(f"--elements: {exc} (write e.g. Zn, Cu, N)") from None
    reply = _agent.request(args, "expect",
                           lambda client: client.expect(args.sample, args.phases, top_k=args.top_k, elements=elements))
    if reply is None:
        return 2
    if reply["phases"]:
        extra = f"; elements {' '.join(reply['elements'])}" if reply.get("elements") else ""
        print(f"{reply['sample_id']}: expecting {', '.join(reply['phases'])} within the Top-{reply['top_k']}{extra}")
    else:
        print(f"{reply['sample_id']}: expectation forgotten")
    return 0
