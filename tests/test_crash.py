"""Crash (short version of ``xrd-agent bench crash``): kill -9 a real ``xrd-agent run`` three
times during a burst; after each restart everything is still published exactly once (by
content hash, against the ledger and the subscriber's received set) and seqs keep rising."""

from __future__ import annotations

from pathlib import Path

from xrd_agent.bench.crash import run_crash


def test_three_kill_9_during_a_burst_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    result = run_crash(tmp_path, 150, 3, seed=11, burst=30, pause_s=0.4, slow_s=1.0, up_s=(0.5, 2.5),
                       timeout_s=120, log=lambda *_: None)
    assert result.kills == 3
    assert result.seq_monotonic, result.lines()
    assert result.verdict.ok, "\n".join(result.lines())
    assert result.verdict.identified + result.verdict.duplicates + result.verdict.rejected == 150
