"""The noise bank: noise cut from the real fixtures, storage round trip, and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xrd_agent.errors import LibraryError, ScanError
from xrd_agent.model.noise import NoiseBank, default_bank_path, extract_segments, licences_from_readme
from xrd_agent.pattern import GRID_POINTS, MODEL_GRID
from xrd_agent.peakshape import broaden
from xrd_agent.readers import read_scan
from xrd_agent.scan import Scan, ScanRange, Wavelength


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "xrd_agent", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_noise_from_a_real_scan_has_no_peaks(fixtures_dir):
    scan = read_scan(fixtures_dir / "BT86.raw")
    segments = extract_segments(scan.two_theta, scan.intensity)
    assert len(segments) >= 3
    values = np.concatenate(segments)
    sigma = 1.4826 * np.median(np.abs(values))
    for seg in segments:
        assert seg.dtype == np.float32 and seg.size >= 50
        assert abs(float(seg.mean())) < 1e-6
    # BT86 peaks reach 1.0 on this scale; what is left is noise a few sigma wide.
    assert np.abs(values).max() < 8 * sigma < 0.05


def test_synthetic_peaks_are_masked_out():
    rng = np.random.default_rng(0)
    tt = np.arange(5, 50, 0.02)
    clean = broaden(np.array([10.0, 20.0, 30.0, 40.0]), np.ones(4), grid=tt)
    y = rng.poisson(2000 * clean / clean.max() + 200).astype(float)
    segments = extract_segments(tt, y)
    values = np.concatenate(segments)
    # Peaks are 1.0 on this scale, noise sqrt(200)/2000 = 0.007: nothing peak-sized survives.
    assert np.abs(values).max() < 0.05
    assert 0.004 < 1.4826 * np.median(np.abs(values)) < 0.011


def test_bank_round_trip_and_sampling(fixtures_dir, tmp_path):
    scans = [read_scan(fixtures_dir / name) for name in ("BT86.raw", "Cu3Au-1.raw")]
    bank = NoiseBank.from_scans(scans, licences={"BT86.raw": "LGPL-2.1"})
    assert [s["file"] for s in bank.sources] == ["BT86.raw", "Cu3Au-1.raw"]
    assert bank.sources[0]["licence"] == "LGPL-2.1" and bank.sources[1]["licence"] == "unspecified"
    assert bank.sources[0]["sha256"] == scans[0].sha256
    path = bank.save(tmp_path / "bank.npz")
    loaded = NoiseBank.load(path)
    assert loaded.sources == bank.sources and loaded.segment_source == bank.segment_source
    for a, b in zip(loaded.segments, bank.segments):
        np.testing.assert_array_equal(a, b)
    rows = loaded.sample(4, np.random.default_rng(7))
    assert rows.shape == (4, GRID_POINTS) and rows.dtype == np.float32 and np.isfinite(rows).all()
    np.testing.assert_array_equal(rows, loaded.sample(4, np.random.default_rng(7)))
    assert not np.array_equal(rows, loaded.sample(4, np.random.default_rng(8)))


def test_bad_additions_and_damaged_banks_are_refused(fixtures_dir, tmp_path):
    bank = NoiseBank()
    scan = read_scan(fixtures_dir / "BT86.raw")
    bank.add(scan)
    with pytest.raises(ScanError, match="already"):
        bank.add(scan)
    dead = Scan(ranges=(ScanRange(MODEL_GRID, np.zeros(GRID_POINTS)),),  # detector off: no counts
                source_path=Path("dead.xy"), format="xy", format_version="1", sha256="1" * 64,
                wavelength=Wavelength.for_anode("Cu"))
    with pytest.raises(ScanError, match="peak-free"):
        bank.add(dead)
    with pytest.raises(LibraryError, match="empty"):
        NoiseBank().sample(1, np.random.default_rng(0))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(LibraryError):
        NoiseBank.load(bad)
    np.savez(tmp_path / "wrong.npz", values=np.zeros(3, np.float32), offsets=np.array([0, 5]),
             source=np.array([0], np.int32), manifest=np.array(json.dumps(
                 {"format": "xrd-agent-noise-bank", "format_version": 1, "sources": [{}]})))
    with pytest.raises(LibraryError, match="damaged"):
        NoiseBank.load(tmp_path / "wrong.npz")


def test_shipped_bank_is_small_and_traceable(fixtures_dir):
    path = default_bank_path()
    assert path.stat().st_size < 2_000_000
    bank = NoiseBank.load()
    assert bank.points > 10_000
    for source in bank.sources:
        assert _sha(fixtures_dir / source["file"]) == source["sha256"]
        assert source["licence"] != "unspecified"
    assert "noise build" in bank.manifest["build_command"]


def test_licences_are_read_from_the_fixtures_readme(fixtures_dir):
    found = licences_from_readme([fixtures_dir / "Si-Std_SRM640d_D8D_20-97_7_16hm.brml"])
    bam = "BAMresearch/bruker-powderxrd-parser tests, Apache-2.0"
    assert found["Si-Std_SRM640d_D8D_20-97_7_16hm.brml"] == bam
    assert "LGPL-2.1" in found["Cu3Au-1.raw"]


def test_cli_build_add_and_show(fixtures_dir, tmp_path):
    shipped = _sha(default_bank_path())
    out = tmp_path / "bank.npz"
    junk = tmp_path / "junk.raw"
    junk.write_bytes(b"RAW4.00" + bytes(40))  # a truncated RAW4 header
    done = _cli("noise", "build", "--out", str(out), str(junk), str(fixtures_dir / "BT86.raw"), cwd=tmp_path)
    # The broken file is reported, the good one still used.
    assert done.returncode == 1, done.stderr
    assert "junk.raw" in done.stderr and "BT86.raw" in done.stdout
    assert [s["file"] for s in NoiseBank.load(out).sources] == ["BT86.raw"]

    done = _cli("noise", "add", "--bank", str(out), str(fixtures_dir / "empyrean.xrdml"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [s["file"] for s in NoiseBank.load(out).sources] == ["BT86.raw", "empyrean.xrdml"]

    # Without --bank: the state directory's bank, started from the shipped one.
    state = tmp_path / "state"
    done = _cli("noise", "add", "--state", str(state), "--licence", "CC-BY-4.0",
                str(junk), str(fixtures_dir / "BT86_.UXD"), cwd=tmp_path)
    assert done.returncode == 1 and "junk.raw" in done.stderr
    lab = NoiseBank.load(state / "noise_bank.npz")
    assert len(lab.sources) == len(NoiseBank.load().sources) + 1
    assert lab.sources[-1]["file"] == "BT86_.UXD" and lab.sources[-1]["licence"] == "CC-BY-4.0"
    assert _sha(default_bank_path()) == shipped  # the installed package was not touched

    done = _cli("noise", "show", "--json", "--bank", str(out), cwd=tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout)["segments"] == len(NoiseBank.load(out))
    done = _cli("noise", "show", "--bank", str(tmp_path / "missing.npz"), cwd=tmp_path)
    assert done.returncode == 2 and "no readable noise bank" in done.stderr
