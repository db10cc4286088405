"""`xrd-agent demo` runs to completion on its own and tells what happened."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_to_completion(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "xrd_agent", "demo", "--scans", "6", "--pause", "0.2", "--keep", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert "Traceback" not in out + res.stderr
    summary = out[out.index("xrd-agent demo summary"):]
    assert "rejected 1" in summary and "re-exports 1" in summary
    for reason in ("amorphous", "expected_phase_missing", "unreadable"):
        assert reason in summary
    assert "(no outcome)" not in summary
    assert "ALERT CRITICAL amorphous" in out  # printed live by the subscriber process
    assert "agent stopped with exit code 0" in summary
    assert (tmp_path / "demo" / "state" / "ledger.sqlite3").is_file()
