"""The mixture table of ``xrd-agent evaluate`` (xrd_agent/testing/mixture_eval.py), end to end on
a few small cubic structures so that it stays fast: the physics check really runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymatgen")

from xrd_agent.testing import mixture_eval  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: PbSe, ZnS and MnS of tests/data/real-scans/byo-cif: small cubic cells, fast fits.
SMALL = ("1538746", "1100043", "1011351")


@pytest.mark.timeout(120)
def test_simulated_summary_agrees_with_its_case_and_finds_an_easy_mixture():
    sim = mixture_eval.simulated(1, names=SMALL)
    cases = sim["cases"]
    assert sorted(sim["structures"]) == sorted(SMALL) and len(cases) == 1
    for c in cases:
        assert {c["a"], c["b"]} <= set(SMALL) and c["a"] != c["b"] and 0.1 <= c["w_a"] <= 0.9
        found = {p["refcode"]: p for p in c["phases"]}
        assert c["both_found"] == ({c["a"], c["b"]} <= set(found))
        assert c["found"] == c["both_found"]  # no two of these structures are one
        if c["found"]:
            assert c["error"] == pytest.approx(abs(found[c["a"]]["weight_fraction"] - c["w_a"]))
            assert c["within_2sigma"] == (c["error"] <= 2 * found[c["a"]]["uncertainty"])
            assert sum(p["weight_fraction"] for p in c["phases"]) == pytest.approx(1.0)
        assert c["single"]["mixture"] == (len(c["single"]["phases"]) > 1)
        assert c["single"]["found"] == bool(c["single"]["phases"] and c["single"]["phases"][0]["refcode"] == c["a"])
        assert not c["same_structure"]
    errors = [c["error"] for c in cases if c["found"]]
    assert sim["found"] == len(errors)
    assert sim["singles_called_mixtures"] == sum(c["single"]["mixture"] for c in cases)
    assert sim["distinct_n"] == 1
    judged = [c["within_2sigma"] for c in cases if c["within_2sigma"] is not None]
    assert sim["within_2sigma_n"] == len(judged) and sim["within_2sigma"] == pytest.approx(np.mean(judged))
    # two cubic phases of different cells with Poisson counts: the check must find both
    # and get the weight fraction within 5 points (Hill-Howard from the fitted scales)
    assert sim["found"] == 1, [c["phases"] for c in cases]
    assert sim["error_mean"] == pytest.approx(np.mean(errors)) and sim["error_max"] <= 0.05
    # the same generator and seed as bench_verify --synthetic: case 0 is PbSe + ZnS at w = 0.721
    assert (cases[0]["a"], cases[0]["b"], round(cases[0]["w_a"], 3)) == ("1538746", "1100043", 0.721)


@pytest.mark.timeout(240)
def test_evaluate_prints_the_mixture_table():
    done = subprocess.run([sys.executable, "-m", "xrd_agent", "evaluate", "--mixtures-only", "--mixtures", "1",
                           "--mixture-structures", ",".join(SMALL), "--multiphase", "1"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    out, multi = done.stdout.split("Multi-phase mixtures")
    assert "Mixtures on 1 simulated two-phase scans and 1 single phases" in out
    assert (f"xrd-agent evaluate --mixtures-only --mixtures 1 --mixture-structures {','.join(SMALL)} "
            "--multiphase 1") in out
    # three structures: one three-phase product, every phase of it scored; no four-phase row
    summary = [line for line in multi.splitlines() if re.match(r"\| [34] \| 1 \| \d+/3 \|", line)]
    assert len(summary) == 1 and "no 4-phase mixtures" in done.stderr
    found = int(re.match(r"\| 3 \| 1 \| (\d)/3", summary[0]).group(1))
    case = next(line for line in multi.splitlines() if line.startswith("| 3 | 0 |"))
    reported = case.split("|")[4]
    assert found == sum(k in reported for k in SMALL)
    rows = [line for line in out.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    found = int(re.search(r"both phases found: (\d+)/1", out).group(1))
    assert found == (cells[3] == "yes")
    if found:  # the summary's error is the row's
        mean = re.search(r"where both were found: mean ([\d.]+), max ([\d.]+) points", out)
        assert float(mean.group(1)) == float(mean.group(2)) == float(cells[4].split()[0])
    called = int(re.search(r"called mixtures: (\d+)/1", out).group(1))
    assert called == (cells[5].count(",") >= 1)
    # the measured two-phase scans, each scored
    assert "| measured two-phase scan | true phases | reported composition |" in out
    real = [line for line in out.splitlines() if line.startswith("| biphase-")]
    assert [r.split("|")[1].strip() for r in real] == ["biphase-Ti2448-alpha-beta", "biphase-TiO2Rutile-Anatase"]
    assert all(r.rstrip(" |").split("|")[-1].strip() in ("yes", "no") for r in real)


def test_two_cifs_of_one_structure_are_one_phase_and_different_ones_are_not():
    parsed = mixture_eval.structures(("12A", "beta", "alpha"))
    assert mixture_eval.same_structure(parsed["12A"], parsed["beta"])  # Ti-bcc and Ti-2448 beta
    assert not mixture_eval.same_structure(parsed["alpha"], parsed["beta"])  # hcp and bcc titanium


def test_evaluate_refuses_an_unknown_structure_before_any_work():
    done = subprocess.run([sys.executable, "-m", "xrd_agent", "evaluate", "--mixtures-only",
                           "--mixture-structures", "1538746,nosuch"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "nosuch" in done.stderr
