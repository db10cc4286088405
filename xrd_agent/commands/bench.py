"""``xrd-agent bench latency|throughput|soak|burst|crash|hostile|all``: the proof runs.

Every run prints the machine facts and a reference timing measured in the same run beside
its figures, and exits 1 when a correctness check fails (a lost scan, a duplicate
publication, a crash, a hang). Speed targets are reported, never enforced by exit status.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RUNS = ("latency", "throughput", "soak", "burst", "crash", "hostile")


def _default_fixtures() -> Path:
    """The repository's copy of the real instrument exports (tests/data), when run from a checkout."""
    return Path(__file__).resolve().parents[2] / "tests" / "data" / "fixtures" / "scans"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure latency, throughput and memory; prove bursts, crashes and hostile input",
        description=("Benchmarks and fault runs. Each prints machine facts and a reference timing next to "
                     "its figures; exit status 1 if a correctness check fails."),
    )
    parser.add_argument("run", choices=(*RUNS, "all"), help="which run")
    parser.add_argument("--fixtures", type=Path, default=None,
                        help="real instrument exports the hostile corpus is derived from")
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--workers", type=int, default=2, help="reader processes for the hostile run")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-file deadline in seconds (hostile)")
    parser.add_argument("--service", action="store_true",
                        help="hostile: also drop the corpus into a running service (slow)")
    parser.add_argument("--scans", type=int, default=None,
                        help="latency: per format (default 500); throughput: per format (10000); "
                             "burst: in all (10000); crash: in all (2000)")
    parser.add_argument("--kills", type=int, default=20, help="crash: kill -9 this many times")
    parser.add_argument("--minutes", type=float, default=30.0, help="soak: duration")
    parser.add_argument("--formats", default="raw4,brml,xy", help="comma-separated: raw4,brml,xy")
    parser.add_argument("--engine", choices=("cnn", "cosine"), default=None,
                        help="identification engine of the service runs (default: cnn for latency, soak and "
                             "hostile --service; cosine for burst and crash, which test the plumbing)")
    parser.add_argument("--settle", type=float, default=None,
                        help="latency: watch.settle_s for the service (default: the product default)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xrd_agent.bench.machine import machine, reference

    runs = RUNS if args.run == "all" else (args.run,)
    print(machine().line(), flush=True)
    results: dict[str, object] = {"machine": machine().to_dict()}
    failed = False
    for name in runs:
        ref = reference()
        print(f"== {name} ==  ({ref.line()})", flush=True)
        run_args = argparse.Namespace(**vars(args))
        if args.workdir is not None and len(runs) > 1:  # one folder per run: their sites must not mix
            run_args.workdir = args.workdir / name
        ok, data = _RUNNERS[name](run_args)
        data["reference"] = ref.to_dict()
        results[name] = data
        failed |= not ok
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 1 if failed else 0


def _hostile(args: argparse.Namespace) -> tuple[bool, dict[str, object]]:
    from xrd_agent.bench import hostile

    fixtures = args.fixtures or _default_fixtures()
    if not Path(fixtures).is_dir():
        print(f"no fixture folder at {fixtures}: give the real instrument exports with --fixtures DIR")
        return False, {"error": f"no fixtures at {fixtures}"}
    corpus, report = hostile.run(fixtures, seed=args.seed, workdir=args.workdir, workers=args.workers,
                                 timeout_s=args.timeout)
    print(f"corpus: {len(corpus.cases)} files under {corpus.root} (seed {corpus.seed}); "
          + ", ".join(f"{k} {v}" for k, v in corpus.counts().items()))
    for line in report.lines():
        print(line)
    data: dict[str, object] = {
        "corpus": len(corpus.cases), "families": corpus.counts(), "elapsed_s": report.elapsed_s,
        "by_family": report.by_family, "codes": report.codes, "per_file_s": report.per_file,
        "violations": [v.line() for v in report.violations],
    }
    ok = not report.violations
    if args.service:
        from xrd_agent.bench import service_hostile

        s_ok, s_data = service_hostile.main(corpus, args)
        data["service"] = s_data
        ok &= s_ok
    return ok, data


def _lazy(module: str):  # noqa: ANN202 - small dispatcher
    def runner(args: argparse.Namespace) -> tuple[bool, dict[str, object]]:
        import importlib

        return importlib.import_module(f"xrd_agent.bench.{module}").main(args)

    return runner


_RUNNERS = {
    "hostile": _hostile,
    "latency": _lazy("latency"),
    "throughput": _lazy("throughput"),
    "soak": _lazy("soak"),
    "burst": _lazy("burst"),
    "crash": _lazy("crash"),
}
