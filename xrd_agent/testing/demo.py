"""``xrd-agent demo``: the agent, a simulated D8 and a subscriber, end to end, in a minute.

1. starts ``xrd-agent run`` as a real subprocess on a temporary export folder and state
   dir, with free loopback ports,
2. starts ``xrd-agent subscribe`` (another process) that prints the Top-5 and the alerts
   as they arrive,
3. lets the simulated D8 measure library MOFs one after the other and export them as
   RAW4.00, BRML and .xy, in stages and renamed into place, including a failed (amorphous)
   synthesis, an expected phase that did not form, a byte-identical re-export, an
   unreadable file, a two-phase mixture and a phase the library does not hold,
4. waits until every export has an outcome, prints a one-screen summary, stops the agent
   with SIGTERM (it drains and says ``stopped``) and cleans up.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

#: Well-known MOFs the demo prefers when the library holds them (by name or alias).
FAVOURITES = ("HKUST-1", "ZIF-8", "MOF-5", "UiO-66", "MIL-53(Al)", "ZIF-67", "MOF-74", "MIL-101", "ZIF-7", "UiO-67")


@dataclass(frozen=True)
class Step:
    name: str  # file name
    kind: str  # crystalline | amorphous | mismatch | duplicate | unreadable | mixture | unknown
    phases: tuple[int, ...] = ()  # library indices really in the sample
    expected: tuple[int, ...] = ()  # what the robot expects (sidecar or control socket)
    duplicate_of: str = ""


def _pick(library: Any, count: int) -> list[int]:
    chosen: list[int] = []
    for name in FAVOURITES:
        try:
            i = library.index_of(name)
        except Exception:
            continue
        if i not in chosen:
            chosen.append(i)
    for i in range(len(library)):
        if len(chosen) >= count:
            break
        if i not in chosen:
            chosen.append(i)
    return chosen[:count]


def scenario(library: Any, scans: int) -> list[Step]:
    """The exports, in order; the first ``scans`` of them (every case is in the first eight)."""
    a, b, c, d, e, f, *rest = _pick(library, max(6, scans))
    steps = [
        Step("S-001.raw", "crystalline", (a,), expected=(a,)),
        Step("S-002.brml", "amorphous", expected=(b,)),
        Step("S-003.xy", "mismatch", (c,), expected=(d,)),
        Step("S-001_reexport.raw", "duplicate", duplicate_of="S-001.raw"),
        Step("S-004.raw", "unreadable"),
        Step("S-005.brml", "crystalline", (e,)),
        Step("S-006.raw", "mixture", (a, f)),
        Step("S-007.xy", "unknown"),
    ]
    formats = (".raw", ".brml", ".xy")
    pool = [a, b, c, d, e, f, *rest]
    i = 0
    while len(steps) < scans:
        steps.append(Step(f"S-{len(steps):03d}{formats[i % 3]}", "crystalline", (pool[i % len(pool)],)))
        i += 1
    return steps[:scans]


def _label(library: Any, index: int) -> str:
    return str(library.names[index])


def run_demo(*, scans: int = 10, keep: str | None = None, engine: str = "auto", model: str | None = None,
             pause_s: float = 0.6, out: TextIO = sys.stdout, timeout_s: float = 120.0) -> int:
    from xrd_agent.client import ControlClient
    from xrd_agent.library.artifact import Library
    from xrd_agent.testing.agent import AgentProcess, agent_config, write_config
    from xrd_agent.testing.library import save_tiny_library
    from xrd_agent.testing.simulated_d8 import SimulatedD8

    t0 = time.monotonic()
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="xrd-agent-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "export").mkdir(exist_ok=True)
    say = lambda text: (out.write(text + "\n"), out.flush())  # noqa: E731
    model_section: dict[str, Any] = {"engine": engine}
    if model:
        model_section["model_dir"] = model
    try:
        library = Library.load()
    except Exception:
        library_dir = save_tiny_library(root / "library")
        library = Library.load(library_dir)
        model_section.update(engine="cosine", library_dir=str(library_dir))
        say("note: no reference library is installed here; the demo uses a 12-class stand-in "
            "and the cosine search-match engine")
    config = write_config(root / "agent.toml", agent_config(root, model=model_section))
    agent = AgentProcess(config, root / "state", log_file=root / "agent.log")
    steps = scenario(library, scans)
    say(f"xrd-agent demo: starting the agent (export folder {root / 'export'})")
    subscriber: subprocess.Popen[bytes] | None = None
    code = 1
    try:
        agent.start(timeout=timeout_s)
        say(f"agent ready: PUB {agent.pub}, control {agent.control}; subscriber output follows (#seq lines)")
        subscriber = subprocess.Popen([sys.executable, "-m", "xrd_agent", "subscribe", "--pub", agent.pub,
                                       "--control", agent.control, "--since", "0"], stdout=out, stderr=out)
        time.sleep(1.5)  # cosmetic: let the subscriber print the agent's first messages before the D8's
        control = ControlClient(agent.control, timeout_s=10)
        d8 = SimulatedD8(root / "export", library, seed=2026)
        exported: dict[str, Any] = {}
        truth: dict[str, str] = {}
        for step in steps:
            sample = Path(step.name).stem
            refcodes = [library.refcodes[i] for i in step.phases]
            expected = tuple(library.refcodes[i] for i in step.expected)
            if step.kind == "duplicate":
                exported[step.name] = d8.reexport(exported[step.duplicate_of], step.name)
                truth[step.name] = f"re-export of {step.duplicate_of}"
            elif step.kind == "unreadable":
                exported[step.name] = d8.export_unreadable(step.name, sample)
                truth[step.name] = "detector fault (NaN counts)"
            else:
                kind = {"mismatch": "crystalline", "mixture": "crystalline"}.get(step.kind, step.kind)
                weights = [0.6, 0.4] if step.kind == "mixture" else None
                m = d8.measure(sample, refcodes, kind=kind, weights=weights)
                if step.kind == "mismatch":  # the robot told the agent over the control socket
                    control.expect(sample, list(expected), top_k=3)
                    exported[step.name] = d8.export(step.name, m)
                else:
                    exported[step.name] = d8.export(step.name, m, expected=expected, top_k=3)
                truth[step.name] = {"amorphous": "amorphous (failed synthesis)",
                                    "unknown": "phase not in the library"}.get(
                    step.kind, " + ".join(_label(library, i) for i in step.phases))
            how = f", expects {', '.join(_label(library, i) for i in step.expected)}" if step.expected else ""
            say(f"D8 > exported {step.name:<20} {truth[step.name]}{how}")
            time.sleep(pause_s)
        # the physics check takes seconds per scan, more on a busy machine: the demo waits as long
        # as outcomes keep coming, and gives up only after timeout_s without a new one
        deadline, seen = time.monotonic() + timeout_s, -1
        while time.monotonic() < deadline:
            c = control.status()["counters"]
            outcomes = c.get("identified", 0) + c.get("duplicates", 0) + c.get("rejected", 0)
            if outcomes >= len(steps):
                break
            if outcomes > seen:
                deadline, seen = time.monotonic() + timeout_s, outcomes
            time.sleep(0.2)
        else:
            say("demo: not every export got an outcome in time; see " + str(root / "agent.log"))
        time.sleep(1.0)  # let the subscriber print the last lines
        replay = _all_messages(control)
        control.close()
        code = agent.stop(timeout=60)
        if subscriber is not None:
            subscriber.send_signal(signal.SIGINT)
            try:
                subscriber.wait(30)
            except subprocess.TimeoutExpired:  # it has printed what it got; a slow exit on a loaded machine is no failure
                subscriber.kill()
                subscriber.wait()
            subscriber = None
        _summary(say, steps, truth, replay, library, time.monotonic() - t0, code, root if keep else None)
        return 0 if code == 0 and _complete(steps, replay) else 1
    finally:
        if subscriber is not None and subscriber.poll() is None:
            subscriber.kill()
        agent.kill()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _all_messages(control: Any) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    since = 0
    while True:
        page = control.replay_page(since, 500)
        got.extend(page["messages"])
        if not page["messages"] or not page.get("more"):
            return got
        since = page["messages"][-1]["seq"]


def _seconds(stamp: str) -> float:
    import datetime as _dt

    return _dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _complete(steps: list[Step], messages: list[dict[str, Any]]) -> bool:
    names = {Path(m["path"]).name for m in messages if m["topic"] in ("xrd.identification", "xrd.rejected")}
    return all(s.name in names for s in steps)


def _summary(say: Any, steps: list[Step], truth: dict[str, str], messages: list[dict[str, Any]], library: Any,
             elapsed: float, exit_code: int, kept: Path | None) -> None:
    by_file: dict[str, dict[str, Any]] = {}
    alerts: dict[str, list[str]] = {}
    engine = ""
    for m in messages:
        name = Path(m["path"]).name if m.get("path") else ""
        if m["topic"] in ("xrd.identification", "xrd.rejected"):
            by_file[name] = m
            engine = engine or m.get("model_version", "")
        elif m["topic"] == "xrd.alert":
            alerts.setdefault(name, []).append(m["reason"])
    say("")
    say(f"xrd-agent demo summary: {len(steps)} exports, {elapsed:.1f} s, engine {engine or '?'}, "
        f"library {library.version} ({len(library)} classes)")
    say(f"{'seq':>4}  {'file':<20} {'in the sample':<30} {'top-1 (p)':<28} alerts")
    counts = {"identified": 0, "duplicate": 0, "rejected": 0, "correct": 0, "single": 0}
    for step in steps:
        m = by_file.get(step.name)
        if m is None:
            say(f"{'-':>4}  {step.name:<20} {truth[step.name][:30]:<30} {'(no outcome)':<28}")
            continue
        if m["topic"] == "xrd.rejected":
            counts["rejected"] += 1
            top = f"rejected: {m['error']}"
        else:
            best = m["result"]["top"][0]
            top = f"{best['name'][:20]} ({best['probability']:.2f})"
            if m["duplicate_of"] is not None:
                counts["duplicate"] += 1
                top += f" = #{m['duplicate_of']}"
            else:
                counts["identified"] += 1
            if step.kind in ("crystalline", "mismatch") and len(step.phases) == 1:
                counts["single"] += 1
                truth_i = step.phases[0]  # another determination of the same material counts
                counts["correct"] += best["refcode"] == library.refcodes[truth_i] or (
                    best["name"].lower() == str(library.names[truth_i]).lower())
        flags = m.get("result", {}).get("flags", []) if m["topic"] == "xrd.identification" else []
        note = ", ".join(alerts.get(step.name, [])) or ("flags: " + ", ".join(flags) if flags else "-")
        say(f"{m['seq']:>4}  {step.name:<20} {truth[step.name][:30]:<30} {top[:28]:<28} {note}")
    n_alerts = sum(len(v) for v in alerts.values())
    delays = sorted(_seconds(m["published_at"]) - _seconds(m["written_at"]) for m in by_file.values()
                    if m["topic"] == "xrd.identification" and m.get("written_at"))
    if delays:
        say(f"file written -> result published: median {delays[len(delays) // 2]:.2f} s, "
            f"max {delays[-1]:.2f} s (settle and completeness checks included)")
    say(f"identified {counts['identified']}, re-exports {counts['duplicate']}, rejected {counts['rejected']}, "
        f"alerts {n_alerts}; top-1 names the right material on {counts['correct']} of {counts['single']} single-phase scans")
    say(f"agent stopped with exit code {exit_code} after draining its queue"
        + (f"; files kept in {kept}" if kept else "; temporary files removed"))
