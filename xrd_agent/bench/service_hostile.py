"""The hostile corpus through a running service: 0 crashes, 0 hangs, every hostile file
published once (``xrd.rejected`` with a reason, or an identification for a mutation that is
still a valid scan), and good scans interleaved with it identified as usual.

Files are moved from the corpus folder into the export folder in batches (rename: links
stay links, FIFOs stay FIFOs, sparse files stay sparse), with two good scans after every
batch. The export folder is watched recursively so the deep folders count.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xrd_agent import messages
from xrd_agent.bench import scans as bench_scans
from xrd_agent.bench.site import OUTCOME_TOPICS, Site
from xrd_agent.bench.standin import service_engine
from xrd_agent.testing.hostile import REJECT, VALID, Corpus

#: A truncated export waits this long for the instrument before it is rejected (default 900 s).
INCOMPLETE_TIMEOUT_S = 5.0


@dataclass
class ServiceHostileResult:
    hostile: int
    good: int
    seconds: float
    engine: str
    alive: bool
    rejected: int = 0
    identified: int = 0
    silent: list[str] = field(default_factory=list)  # hostile files with no outcome at all
    doubled: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # reject expected but identified, valid but rejected
    no_reason: list[str] = field(default_factory=list)
    good_missing: list[str] = field(default_factory=list)
    good_wrong: list[str] = field(default_factory=list)
    internal_errors: list[str] = field(default_factory=list)  # tracebacks / exceptions in the agent log
    codes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.alive and not (self.silent or self.doubled or self.wrong or self.no_reason
                                   or self.good_missing or self.good_wrong or self.internal_errors)

    def lines(self) -> list[str]:
        out = [f"engine: {self.engine}",
               f"service: {self.hostile} hostile files + {self.good} good scans in {self.seconds:.0f} s; agent "
               f"{'alive' if self.alive else 'DEAD'}; hostile -> rejected {self.rejected}, identified "
               f"{self.identified}, silent {len(self.silent)}, doubled {len(self.doubled)}, wrong {len(self.wrong)}, "
               f"no reason {len(self.no_reason)}; good scans missing {len(self.good_missing)}, misjudged "
               f"{len(self.good_wrong)}; internal errors logged {len(self.internal_errors)}",
               "rejection codes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.codes.items()))]
        for label, items in (("silent", self.silent), ("doubled", self.doubled), ("wrong", self.wrong),
                             ("no reason", self.no_reason), ("good missing", self.good_missing),
                             ("good misjudged", self.good_wrong), ("internal errors", self.internal_errors)):
            if items:
                out.append(f"  {label}: " + "; ".join(repr(i)[:160] for i in items[:8])
                           + (" ..." if len(items) > 8 else ""))
        return out


def _wait_outcomes(site: Site, wanted: set[str], timeout_s: float, stall_s: float) -> float:
    """Wait until every wanted path has an outcome; give up after ``timeout_s``, or after
    ``stall_s`` without any new outcome (a wedged agent). Returns the stall length, 0 if none."""
    deadline = time.monotonic() + timeout_s
    last_count, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        seen = {_relative(r.message["path"], site.export) for r in list(site.receiver.items)
                if r.topic in OUTCOME_TOPICS}
        if wanted <= seen:
            return 0.0
        if len(seen) != last_count:
            last_count, last_change = len(seen), time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            return time.monotonic() - last_change
        time.sleep(0.5)
    return 0.0


def _as_published(name: str) -> str:
    """A file name as messages carry it: undecodable bytes become backslash escapes
    (JSON must be UTF-8), so ``b"\\xe9"`` in a name reads ``\\xe9``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _relative(path: str, export: Path) -> str:
    try:
        return os.path.relpath(path, export)
    except ValueError:
        return path


def run(corpus: Corpus, *, workdir: Path | None = None, engine: str = "cnn", batch: int = 100,
        pause_s: float = 0.3, timeout_s: float = 600.0, exclude: frozenset[str] = frozenset(),
        stop_timeout_s: float = 60.0, stall_s: float = 60.0, log=print) -> ServiceHostileResult:
    """Drop the corpus (less ``exclude``: names left out to look past one known defect) into a
    running agent with good scans interleaved, and judge every outcome."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="xrd-svc-"))
    choice = service_engine(workdir, engine)
    site = Site(workdir / "service-site", engine=choice.engine, model_dir=choice.model_dir,
                library_dir=choice.library_dir,
                watch={"recursive": True, "incomplete_timeout_s": INCOMPLETE_TIMEOUT_S},
                service={"default_anode": "Cu"})
    library = bench_scans.library_for_scans(choice.library_dir)
    cases = [c for c in corpus.cases if c.name not in exclude]
    n_good = 2 * (len(cases) // batch + 1)
    good = [(f"good-{i:05d}{bench_scans.FORMATS[fmt]}", bench_scans.encode(m, fmt))
            for i, (m, fmt) in enumerate(zip(bench_scans.measurements(n_good, library, seed=99, tag="good"),
                                             ["raw4", "brml", "xy"] * n_good))]
    # Which outcome path each case will have once moved (top-level entries move as a whole).
    expected: dict[str, object] = {}
    for case in cases:
        key = _as_published(case.name)
        expected[f"{key}/inside.raw" if case.kind == "dir" else key] = case
    tops = list(dict.fromkeys(c.name.split("/", 1)[0] for c in cases))
    log(f"engine: {choice.description}; {len(cases)} hostile entries ({len(tops)} top-level) + {len(good)} good scans")
    t0 = time.monotonic()
    alive, stopped, stalled_for = False, False, 0.0
    with site.agent:
        try:
            site.start()
            for b in range(0, len(tops), batch):
                for top in tops[b: b + batch]:
                    os.rename(corpus.root / top, site.export / top)
                for name, data in good[2 * (b // batch): 2 * (b // batch) + 2]:
                    bench_scans.drop(site.export, name, data)
                time.sleep(pause_s)
            wanted = set(expected) | {name for name, _ in good}
            stalled_for = _wait_outcomes(site, wanted, timeout_s, stall_s)
            time.sleep(2.0)
            alive = site.agent.proc is not None and site.agent.proc.poll() is None
            stopped = site.stop_or_kill(stop_timeout_s)  # False: SIGTERM did not drain in time (a hang)
        finally:
            for top in tops:  # put the corpus back for other runs
                if os.path.lexists(site.export / top):
                    os.rename(site.export / top, corpus.root / top)
    result = ServiceHostileResult(len(cases), len(good), time.monotonic() - t0, choice.description, alive)
    if stalled_for:
        result.internal_errors.append(f"the agent stopped publishing: no new outcome for {stalled_for:.0f} s "
                                      "while files were still waiting")
    if not stopped:
        result.internal_errors.append(f"the agent did not stop within {stop_timeout_s:g} s of SIGTERM (killed)")
    got: dict[str, list] = {}
    for r in site.receiver.items:
        if r.topic in OUTCOME_TOPICS:
            got.setdefault(_relative(r.message["path"], site.export), []).append(r)
    for key, case in expected.items():
        items = got.get(key, [])
        if not items:
            result.silent.append(f"{key} ({case.family}: {case.detail})")
            continue
        if len(items) > 1:
            result.doubled.append(key)
        first = items[0]
        if first.topic == messages.REJECTED:
            result.rejected += 1
            code = first.message.get("error", "")
            result.codes[code] = result.codes.get(code, 0) + 1
            if not str(first.message.get("reason", "")).strip():
                result.no_reason.append(key)
            if case.expect == VALID and case.kind != "dir":
                result.wrong.append(f"{key}: valid but rejected ({first.message.get('reason')})")
        else:
            result.identified += 1
            if case.expect == REJECT or case.kind == "dir":
                result.wrong.append(f"{key}: {case.family} identified")
    for name, _ in good:
        items = got.get(name, [])
        if not items:
            result.good_missing.append(name)
        elif len(items) > 1 or items[0].topic != messages.IDENTIFICATION:
            result.good_wrong.append(f"{name}: {[i.topic for i in items]}")
    log_text = site.agent.log_file.read_text(errors="replace") if site.agent.log_file.exists() else ""
    result.internal_errors = [line[:300] for line in log_text.splitlines()
                              if "Traceback" in line or '"exception"' in line or "Error:" in line][:50]
    return result


def main(corpus: Corpus, args: argparse.Namespace) -> tuple[bool, dict[str, object]]:
    """``xrd-agent bench hostile --service``."""
    result = run(corpus, workdir=args.workdir, engine=args.engine or "cnn")
    for line in result.lines():
        print(line)
    return result.ok, asdict(result)
