"""``xrd-agent inspect``: readable lines, JSON lines, one stderr line per bad file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES
from xrd_agent.cli import main

GOOD = [FIXTURES / "format1.raw", FIXTURES / "TwoTheta_scan_scrambled.raw", FIXTURES / "BT86_.UXD"]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xrd_agent", "inspect", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_subprocess_bad_file_among_good_ones(tmp_path: Path) -> None:
    bad = tmp_path / "broken.raw"
    bad.write_bytes((FIXTURES / "BT86.raw").read_bytes()[:5000])
    result = _cli(str(GOOD[0]), str(bad), str(GOOD[1]), "--json")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    errors = result.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"{bad}: ")
    assert "ends at byte 5,000" in errors[0]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(GOOD[0]), str(GOOD[1])]


def test_subprocess_all_good_text_output() -> None:
    result = _cli(*map(str, GOOD))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("  format      ") == 3
    assert "bruker_raw4 4.00" in out and "Locked Coupled" in out
    assert "3: 51 points, 2-theta 40.0000 to 45.0000 deg" in out
    assert "complete    yes" in out and result.stderr == ""


def test_json_is_the_scan_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--json", str(FIXTURES / "format1.raw")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "bruker_raw" and summary["version"] == "3"
    assert [r["points"] for r in summary["ranges"]] == [101, 26, 51]
    assert summary["ranges"][2]["two_theta_first"] == 40.0
    assert summary["ranges"][2]["two_theta_last"] == pytest.approx(45.0)
    assert summary["anode"] == "Cu" and summary["complete"] is True


def test_wavelength_flag_for_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    xy = tmp_path / "scan.xy"
    xy.write_text("5 10\n5.01 12\n5.02 11\n")
    assert main(["inspect", str(xy)]) == 1
    assert "wavelength" in capsys.readouterr().err
    assert main(["inspect", "--json", "--wavelength", "Mo", str(xy)]) == 0
    assert json.loads(capsys.readouterr().out)["anode"] == "Mo"
    assert main(["inspect", "--wavelength", "1.5406", str(xy)]) == 0
    assert "K-alpha1 1.54060 Å" in capsys.readouterr().out
    assert main(["inspect", "--wavelength", "Xx", str(xy)]) == 2
    assert "unknown anode" in capsys.readouterr().err


def test_folder_symlink_and_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "link.raw"
    link.symlink_to(GOOD[0])
    assert main(["inspect", str(tmp_path), str(link), str(tmp_path / "nope.raw")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3
    assert "folder" in err[0] and "symbolic link" in err[1] and "does not exist" in err[2]
