"""Burst: thousands of scans dropped in bursts into a running service; every file ends as
exactly one identification, duplicate-of or rejection, none lost, and the subscriber sees
no gap it cannot fill. Optionally the export folder vanishes mid-run and comes back
(alert, then recovery without a restart)."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from xrd_agent import messages
from xrd_agent.bench.site import Site
from xrd_agent.bench.standin import service_engine
from xrd_agent.bench.workload import Dropper, Verdict, plan, verify


@dataclass
class BurstResult:
    verdict: Verdict
    seconds: float
    drop_seconds: float
    engine: str
    folder_alerts: list[str]

    def lines(self) -> list[str]:
        rate = self.verdict.files / self.seconds if self.seconds else 0.0
        out = [f"engine: {self.engine}",
               f"{self.verdict.files} files dropped in {self.drop_seconds:.1f} s; all outcomes in "
               f"{self.seconds:.1f} s ({rate:.0f} files/s through the service)"]
        out += self.verdict.lines()
        if self.folder_alerts:
            out.append("export folder vanished and came back: alerts " + " -> ".join(self.folder_alerts))
        return out


def run_burst(workdir: Path, n: int, *, seed: int = 0, engine: str = "cosine", burst: int = 200,
              pause_s: float = 1.0, slow_s: float = 2.0, vanish: bool = False, timeout_s: float | None = None,
              log=print) -> BurstResult:
    workdir = Path(workdir)
    choice = service_engine(workdir, engine)
    site = Site(workdir / "site", engine=choice.engine, model_dir=choice.model_dir, library_dir=choice.library_dir,
                watch={"queue_size": 256})
    from xrd_agent.bench.scans import library_for_scans

    library = library_for_scans(choice.library_dir)
    t = time.monotonic()
    drops = plan(n, library, seed=seed)
    log(f"planned {len(drops)} files in {time.monotonic() - t:.1f} s; engine: {choice.description}")
    folder_alerts: list[str] = []
    with site.agent:
        site.start()
        dropper = Dropper(site.export, burst=burst, pause_s=pause_s, slow_s=slow_s, seed=seed)
        vanish_at = (len(drops) // burst) // 2 if vanish else -1

        def between(b: int) -> None:
            if b == vanish_at:
                folder_alerts.extend(_vanish_and_return(site, log))

        t0 = time.monotonic()
        dropper.run(drops, between=between)
        dropper.close()
        drop_s = time.monotonic() - t0
        names = {d.name for d in drops}
        limit = timeout_s or max(120.0, n * 0.2)
        done = site.receiver.wait_for(lambda: names <= set(site.receiver.outcomes()), limit, "all outcomes")
        elapsed = time.monotonic() - t0
        if not done:
            log(f"timed out after {limit:.0f} s waiting for outcomes")
        time.sleep(1.0)  # a reconciliation tick later: still nothing new may appear
        site.stop()
    scans, msgs = site.ledger()
    verdict = verify(drops, site.receiver, scans, msgs)
    return BurstResult(verdict, elapsed, drop_s, choice.description, folder_alerts)


def _vanish_and_return(site: Site, log) -> list[str]:
    """Rename the export folder away and back (an unmounted share); wait for both alerts."""
    away = site.export.with_name("export-away")
    seen: list[str] = []

    def alerts() -> list[str]:
        return [r.message["reason"] for r in site.receiver.items
                if r.topic == messages.ALERT and r.message["reason"].startswith("folder_")]

    before = len(alerts())
    os.rename(site.export, away)
    ok_missing = site.receiver.wait_for(lambda: len(alerts()) > before, 30, "folder_missing")
    os.rename(away, site.export)
    ok_back = site.receiver.wait_for(lambda: len(alerts()) > before + 1, 30, "folder_restored")
    seen = alerts()[before:]
    log(f"export folder renamed away and back: alerts {seen} (missing seen: {ok_missing}, restored seen: {ok_back})")
    return seen


def main(args: argparse.Namespace) -> tuple[bool, dict[str, object]]:
    n = args.scans or 10_000
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="xrd-burst-"))
    result = run_burst(Path(workdir), n, seed=args.seed, engine=getattr(args, "engine", None) or "cosine", vanish=True)
    for line in result.lines():
        print(line)
    folder_ok = result.folder_alerts[:2] == ["folder_missing", "folder_restored"]
    if not folder_ok:
        print("FAILED: the folder_missing / folder_restored alerts did not both arrive")
    return result.verdict.ok and folder_ok, {"files": n, "seconds": result.seconds, "engine": result.engine,
                                             "verdict": asdict(result.verdict), "folder_alerts": result.folder_alerts}
