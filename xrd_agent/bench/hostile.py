"""The hostile-input run at reader level: every corpus file through the readers, isolated.

Pass criteria per file (see :mod:`xrd_agent.testing.hostile`): never an exception other than
a ScanError, never a hang past the deadline, never a dead process; ``reject`` cases must be
rejected, ``valid`` cases must read. The service-level run lives in :mod:`xrd_agent.bench.service_hostile`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xrd_agent.bench.sandbox import DEFAULT_MEMORY_BYTES, FAILURES, REJECTED, SCAN, Outcome, run_isolated
from xrd_agent.bench.stats import percentiles
from xrd_agent.testing.hostile import REJECT, VALID, Corpus, HostileCase, generate


@dataclass(frozen=True)
class Violation:
    case: HostileCase
    outcome: Outcome

    def line(self) -> str:
        what = {SCAN: "read as a valid scan", REJECTED: f"rejected ({self.outcome.code})"}.get(
            self.outcome.status, f"{self.outcome.status}: {self.outcome.code}")
        return (f"[{self.case.family}] {self.case.name!r} ({self.case.detail}; expected {self.case.expect}): "
                f"{what} {self.outcome.reason[:300]}")


def violation(case: HostileCase, outcome: Outcome) -> bool:
    """Whether a reader's outcome on one case breaks the contract."""
    if outcome.status in FAILURES:
        return True
    if case.expect == REJECT and outcome.status != REJECTED:
        return True
    if case.expect == VALID and outcome.status != SCAN:
        return True
    return outcome.status == REJECTED and not outcome.reason.strip()


@dataclass
class ReaderReport:
    corpus_size: int
    elapsed_s: float
    by_family: dict[str, dict[str, int]]
    codes: dict[str, int]
    violations: list[Violation]
    per_file: dict[str, float]
    slowest: list[tuple[float, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"hostile corpus: {self.corpus_size} files read in {self.elapsed_s:.1f} s; "
               f"per file p50 {self.per_file['p50'] * 1e3:.1f} ms, p99 {self.per_file['p99'] * 1e3:.1f} ms, "
               f"max {self.per_file['max'] * 1e3:.0f} ms",
               f"{'family':<14} {'files':>6} {'scan':>6} {'rejected':>9} {'error':>6} {'hang':>5} {'died':>5}"]
        for fam, c in self.by_family.items():
            out.append(f"{fam:<14} {sum(c.values()):>6} {c.get('scan', 0):>6} {c.get('rejected', 0):>9} "
                       f"{c.get('error', 0):>6} {c.get('hang', 0):>5} {c.get('died', 0):>5}")
        out.append("rejection codes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.codes.items())))
        out.append(f"violations: {len(self.violations)}")
        out += ["  " + v.line() for v in self.violations[:40]]
        if len(self.violations) > 40:
            out.append(f"  ... and {len(self.violations) - 40} more")
        out.append("slowest: " + "; ".join(f"{n} {s * 1e3:.0f} ms" for s, n in self.slowest))
        return out


def check(corpus: Corpus, *, workers: int = 2, timeout_s: float = 10.0,
          memory_bytes: int = DEFAULT_MEMORY_BYTES, cases: Sequence[HostileCase] | None = None) -> ReaderReport:
    """Read the corpus (or ``cases`` of it) in isolated workers and judge every outcome."""
    chosen = list(cases if cases is not None else corpus.cases)
    t0 = time.perf_counter()
    outcomes = run_isolated([corpus.root / c.name for c in chosen], workers=workers, timeout_s=timeout_s,
                            memory_bytes=memory_bytes)
    elapsed = time.perf_counter() - t0
    by_family: dict[str, dict[str, int]] = {}
    codes: dict[str, int] = {}
    for case, outcome in zip(chosen, outcomes):
        fam = by_family.setdefault(case.family, {})
        fam[outcome.status] = fam.get(outcome.status, 0) + 1
        if outcome.status == REJECTED:
            codes[outcome.code] = codes.get(outcome.code, 0) + 1
    bad = [Violation(c, o) for c, o in zip(chosen, outcomes) if violation(c, o)]
    slow = sorted(((o.seconds, c.name) for c, o in zip(chosen, outcomes)), reverse=True)[:5]
    return ReaderReport(len(chosen), elapsed, dict(sorted(by_family.items())), codes, bad,
                        percentiles([o.seconds for o in outcomes]), slow)


def run(fixtures: Path, *, seed: int = 0, workdir: Path | None = None, workers: int = 2,
        timeout_s: float = 10.0) -> tuple[Corpus, ReaderReport]:
    """Generate the corpus under ``workdir`` (a temporary folder if None) and check it."""
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="xrd-hostile-"))
    corpus = generate(fixtures, Path(workdir) / "corpus", seed=seed)
    corpus.save_manifest()
    return corpus, check(corpus, workers=workers, timeout_s=timeout_s)
