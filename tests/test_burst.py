"""Burst (short version of ``xrd-agent bench burst``): a real ``xrd-agent run`` process, files
dropped in bursts — mixed RAW4/BRML/xy, some grown slowly in place, some renamed into place,
exact duplicates, junk — each ends as exactly one outcome; none lost; no unfillable gap."""

from __future__ import annotations

from pathlib import Path

from xrd_agent import messages
from xrd_agent.bench.burst import run_burst
from xrd_agent.bench.site import Received, Receiver
from xrd_agent.bench.workload import DUPLICATE, JUNK, SCAN, Drop, plan, verify
from xrd_agent.testing.library import tiny_library


def test_a_burst_of_150_files_ends_in_exactly_one_outcome_each(tmp_path: Path) -> None:
    result = run_burst(tmp_path, 150, seed=3, burst=50, pause_s=0.5, slow_s=1.5, timeout_s=120, log=lambda *_: None)
    v = result.verdict
    assert v.ok, "\n".join(result.lines())
    assert v.identified + v.duplicates + v.rejected == 150
    assert v.duplicates >= 5 and v.rejected >= 3  # the plan's copies and junk really went through


def test_the_plan_mixes_formats_modes_copies_and_junk() -> None:
    drops = plan(300, tiny_library(20), seed=1, slow_share=0.1)
    kinds = {d.kind for d in drops}
    assert kinds == {SCAN, DUPLICATE, JUNK}
    assert {Path(d.name).suffix for d in drops if d.kind == SCAN} == {".raw", ".brml", ".xy"}
    assert any(d.mode == "slow" for d in drops)
    order = {d.name: i for i, d in enumerate(drops)}
    assert all(order[d.original] < order[d.name] for d in drops if d.original)
    copies = [d for d in drops if d.kind == DUPLICATE]
    assert all(c.bytes() == next(d for d in drops if d.name == c.original).bytes() for c in copies)


def _received(seq: int, topic: str, name: str, **fields) -> Received:
    return Received(seq, topic, {"path": f"/x/{name}", **fields}, 0.0)


def test_the_verdict_catches_lost_doubled_and_wrong_outcomes() -> None:
    a = Drop("a.raw", SCAN, "rename", lambda: b"A")
    b = Drop("b.raw", DUPLICATE, "rename", lambda: b"A", original="a.raw")
    j = Drop("j.xy", JUNK, "rename", lambda: b"junk")
    lost = Drop("lost.xy", SCAN, "rename", lambda: b"L")
    for d in (a, b, j, lost):
        d.bytes()
    r = Receiver()
    for item in (_received(1, messages.IDENTIFICATION, "a.raw", scan_id=a.sha256, duplicate_of=None),
                 _received(2, messages.IDENTIFICATION, "b.raw", scan_id=b.sha256, duplicate_of=99),
                 _received(3, messages.IDENTIFICATION, "j.xy", scan_id="x", duplicate_of=None),
                 _received(4, messages.REJECTED, "a.raw")):
        r.by_seq[item.seq] = item
        r.items.append(item)
    ledger_scans = [{"path": "/x/a.raw"}, {"path": "/x/a.raw"}, {"path": "/x/b.raw"}, {"path": "/x/j.xy"}]
    ledger_msgs = [{"seq": s, "topic": r.by_seq[s].topic} for s in (1, 2, 3, 4)] + [
        {"seq": 5, "topic": messages.REJECTED}]
    v = verify([a, b, j, lost], r, ledger_scans, ledger_msgs)
    assert not v.ok
    assert v.lost == ["lost.xy"] and v.doubled == ["a.raw"]
    assert any("duplicate_of 99" in w for w in v.wrong) and any(w.startswith("j.xy") for w in v.wrong)
    assert v.ledger_doubled == ["a.raw"] and v.ledger_missing == ["lost.xy"]
    assert any("never reached" in p for p in v.seq_problems)
