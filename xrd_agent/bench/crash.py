"""Crash: kill -9 the service at random moments during a burst, restart it, repeat; in the
end every file is published exactly once (by content hash, checked against the ledger and
the subscriber's received set) and sequence numbers only ever increase."""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xrd_agent.bench.site import Site
from xrd_agent.bench.standin import service_engine
from xrd_agent.bench.workload import Dropper, Verdict, plan, verify


@dataclass
class CrashResult:
    verdict: Verdict
    kills: int
    seconds: float
    engine: str
    seq_at_kill: list[int] = field(default_factory=list)  # ledger's last seq at each kill
    seq_after_restart: list[int] = field(default_factory=list)  # first new seq after each restart
    restart_s: list[float] = field(default_factory=list)

    @property
    def seq_monotonic(self) -> bool:
        return all(after > before for before, after in zip(self.seq_at_kill, self.seq_after_restart))

    def lines(self) -> list[str]:
        out = [f"engine: {self.engine}",
               f"{self.kills} kill -9 during a burst of {self.verdict.files} files; finished in {self.seconds:.1f} s; "
               f"restart to ready: max {max(self.restart_s, default=0):.1f} s",
               f"seq at each kill -> first seq after restart: "
               + ", ".join(f"{a}->{b}" for a, b in zip(self.seq_at_kill, self.seq_after_restart))
               + f" ({'increasing' if self.seq_monotonic else 'NOT increasing'})"]
        return out + self.verdict.lines()


def _last_seq(site: Site) -> int:
    from xrd_agent.service.ledger import Ledger

    ledger = Ledger(site.root / "state")
    try:
        return ledger.last_seq()
    finally:
        ledger.close()


def run_crash(workdir: Path, n: int, kills: int, *, seed: int = 0, engine: str = "cosine", burst: int = 100,
              pause_s: float = 0.5, slow_s: float = 1.5, up_s: tuple[float, float] = (0.5, 3.0),
              timeout_s: float | None = None, log=print) -> CrashResult:
    workdir = Path(workdir)
    rng = random.Random(seed)
    choice = service_engine(workdir, engine)
    site = Site(workdir / "site", engine=choice.engine, model_dir=choice.model_dir, library_dir=choice.library_dir)
    from xrd_agent.bench.scans import library_for_scans

    drops = plan(n, library_for_scans(choice.library_dir), seed=seed, tag="crash")
    result = CrashResult(Verdict(len(drops)), 0, 0.0, choice.description)
    t0 = time.monotonic()
    with site.agent:
        site.start()
        dropper = Dropper(site.export, burst=burst, pause_s=pause_s, slow_s=slow_s, seed=seed)
        feeder = threading.Thread(target=dropper.run, args=(drops,), daemon=True, name="dropper")
        feeder.start()
        for k in range(kills):
            time.sleep(rng.uniform(*up_s))
            site.kill()
            result.seq_at_kill.append(_last_seq(site))
            time.sleep(rng.uniform(0.0, 1.0))  # files keep arriving while it is down
            t = time.monotonic()
            site.start()
            result.restart_s.append(time.monotonic() - t)
            result.kills += 1
            before = result.seq_at_kill[-1]
            site.receiver.wait_for(lambda: max(site.receiver.by_seq, default=0) > before, 30, "new seq")
            # The first seq this incarnation wrote (status 'starting' is recorded too).
            result.seq_after_restart.append(min((s for s in _all_seqs(site) if s > before), default=before))
        feeder.join()
        dropper.close()
        names = {d.name for d in drops}
        limit = timeout_s or max(120.0, n * 0.3)
        if not site.receiver.wait_for(lambda: names <= set(site.receiver.outcomes()), limit, "all outcomes"):
            log(f"timed out after {limit:.0f} s waiting for outcomes")
        time.sleep(1.0)
        site.stop()
    result.seconds = time.monotonic() - t0
    scans, msgs = site.ledger()
    result.verdict = verify(drops, site.receiver, scans, msgs)
    return result


def _all_seqs(site: Site) -> list[int]:
    _, msgs = site.ledger()
    return [int(m["seq"]) for m in msgs]


def main(args: argparse.Namespace) -> tuple[bool, dict[str, object]]:
    n = args.scans or 2000
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="xrd-crash-"))
    result = run_crash(Path(workdir), n, args.kills, seed=args.seed, engine=getattr(args, "engine", None) or "cosine")
    for line in result.lines():
        print(line)
    ok = result.verdict.ok and result.seq_monotonic and result.kills == args.kills
    return ok, {"files": n, "kills": result.kills, "seconds": result.seconds, "engine": result.engine,
                "seq_at_kill": result.seq_at_kill, "seq_after_restart": result.seq_after_restart,
                "restart_s": result.restart_s, "verdict": asdict(result.verdict)}
