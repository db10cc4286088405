"""``xrd-agent train`` and ``xrd-agent identify`` as a user runs them: real subprocesses,
real fixture files, a tiny model trained through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_model_support import tiny_library

from xrd_agent.model import artifact

SCANS = ("BT86.raw", "Si-Std_SRM640d_D8D_20-97_7_16hm.brml", "format1.raw", "TwoTheta_scan_scrambled.raw")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def _cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "xrd_agent", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tiny_library(10, seed=5).save(root / "library")
    done = _cli("train", "--library", root / "library", "--out", root / "model", "--epochs", "3",
                "--per-class", "12", "--batch-size", "32", "--seed", "1", "--no-bank-noise")
    assert done.returncode == 0, done.stderr
    assert "training on cpu" in done.stderr  # the device decision is logged
    return root


def test_train_cli_records_the_exact_command(trained):
    manifest = artifact.read_manifest(trained / "model")
    assert manifest.command.startswith("xrd-agent train --library")
    assert "--per-class 12" in manifest.command and manifest.training["per_class"] == 12
    assert len(manifest.classes) == 10 and manifest.device == "cpu"


def test_identify_json_gives_schema_shaped_lines(trained, fixtures_dir, tmp_path):
    files = [fixtures_dir / name for name in SCANS]
    done = _cli("identify", "--no-verify", "--json", "--top", "3", "--model", trained / "model", "--library",
                trained / "library", *files, "--png", tmp_path / "id.png")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [doc["file"] for doc in lines] == [str(f) for f in files]
    for doc in lines:
        assert set(doc) >= {"file", "sample_id", "top", "confidence", "flags", "gate", "coverage", "cam_regions"}
        assert [c["rank"] for c in doc["top"]] == [1, 2, 3]
        assert all(set(c) == {"rank", "refcode", "name", "probability", "material", "determinations"}
                   for c in doc["top"])  # answers are materials
        assert len({c["material"] for c in doc["top"]}) == 3
        assert 0.0 <= doc["confidence"] <= 1.0
        assert set(doc["flags"]) <= {"unknown_phase", "amorphous", "mixture", "low_coverage", "low_crystallinity"}
        assert set(doc["gate"]) == {"applied", "high_band_mean", "threshold", "cutoff_bins"}
        assert 0.0 < doc["coverage"]["fraction"] <= 1.0
        assert all(5.0 <= r["start"] <= r["end"] <= 50.0 for r in doc["cam_regions"])
    partial = lines[2]
    assert "low_coverage" in partial["flags"]  # three ranges, 10-20, 30-35 and 40-45 deg
    assert 0.0 <= lines[0]["crystallinity"]["fraction"] <= 1.0 and lines[0]["crystallinity"]["uncertainty"] >= 0
    pngs = sorted(p.name for p in tmp_path.glob("id-*.png"))
    assert len(pngs) == len(files) and all((tmp_path / p).stat().st_size > 10_000 for p in pngs)


def test_a_bad_file_costs_one_stderr_line_and_exit_1(trained, fixtures_dir, tmp_path):
    bad = tmp_path / "broken.raw"
    bad.write_bytes(b"RAW4.00" + b"\0" * 40)
    done = _cli("identify", "--no-verify", "--model", trained / "model", "--library", trained / "library", bad,
                fixtures_dir / "BT86.raw")
    assert done.returncode == 1
    assert [line for line in done.stderr.splitlines() if line.startswith(str(bad))]
    assert "BT86.raw" in done.stdout and "confidence" in done.stdout  # the good file still ran


def test_a_fragment_is_rejected_as_no_coverage_never_identified(trained, fixtures_dir):
    """empyrean.xrdml measured 30-42 deg: too little to identify or to call amorphous (issue 12.7)."""
    done = _cli("identify", "--json", "--model", trained / "model", "--library", trained / "library",
                fixtures_dir / "empyrean.xrdml", fixtures_dir / "BT86.raw")
    assert done.returncode == 1
    rejected = [line for line in done.stderr.splitlines() if "empyrean.xrdml" in line]
    assert rejected and "a judgement needs at least 15 deg" in rejected[0]
    assert [json.loads(line)["file"] for line in done.stdout.splitlines()] == [str(fixtures_dir / "BT86.raw")]


def test_identify_without_a_readable_model_explains_itself(fixtures_dir, tmp_path):
    done = _cli("identify", "--model", tmp_path / "nothing", fixtures_dir / "BT86.raw")
    assert done.returncode == 2
    assert "no readable model" in done.stderr and "Traceback" not in done.stderr
