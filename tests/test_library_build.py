"""End-to-end library builds through the real command (subprocesses), then info and show."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xrd_agent.library.artifact import Library

CIF_DIR = Path(__file__).parent / "data" / "cif"


def xrd(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "xrd_agent", *args], capture_output=True, text=True, timeout=240)
    if check and proc.returncode != 0:
        raise AssertionError(f"xrd-agent {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def cif_library(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("cif") / "lib"
    proc = xrd("library", "build", "--cif-dir", str(CIF_DIR), "--out", str(out), "--workers", "2", "--quiet")
    return out, proc


def test_cif_dir_build_skips_the_bad_cif_and_says_why(cif_library):
    out, proc = cif_library
    lib = Library.load(out, verify=True)
    assert [e["refcode"] for e in lib.entries] == ["NaCl", "SALLAT_clean", "SUHHOT_clean"]
    assert lib.entries[0]["name"] == "rock salt"  # from _chemical_name_common
    assert lib.entries[0]["space_group"] == "F m -3 m"
    assert "bad_truncated.cif" in proc.stderr and "cannot be read" in proc.stderr
    assert [s["source"] for s in lib.manifest["skipped"]] == ["bad_truncated.cif"]
    assert lib.patterns16.dtype == np.float16
    assert np.allclose(lib.patterns.max(axis=1), 1.0, atol=1e-3)
    for i in range(len(lib)):
        st = lib.sticks(i)
        assert st.two_theta.size > 0 and st.intensity.max() == pytest.approx(1.0)
        assert np.all((st.two_theta >= 5) & (st.two_theta <= 50))
    assert (out / "selection.txt").read_text().splitlines()[1].split("\t")[2] == "NaCl"


def test_info_json_and_show_with_png(cif_library, tmp_path):
    out, _ = cif_library
    doc = json.loads(xrd("library", "info", "--library", str(out), "--json").stdout)
    assert doc["count"] == 3 and doc["entries"][0] == {**doc["entries"][0], "refcode": "NaCl", "name": "rock salt"}
    png = tmp_path / "nacl.png"
    shown = xrd("library", "show", "rock salt", "--library", str(out), "--png", str(png)).stdout
    assert "31.70" in shown and "2 0 0" in shown  # the strongest NaCl reflection, with its hkl
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = xrd("library", "show", "ZIF-999", "--library", str(out), check=False)
    assert missing.returncode == 2 and "no library entry" in missing.stderr


def test_a_folder_without_readable_cifs_fails_cleanly(tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(CIF_DIR / "bad_truncated.cif", tmp_path / "in")
    proc = xrd("library", "build", "--cif-dir", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--quiet",
               check=False)
    assert proc.returncode == 2 and "none of the 1 CIFs" in proc.stderr


def test_coremof_build_with_limit_has_named_classes_and_heldout(tmp_path):
    pytest.importorskip("CoRE_MOF")
    out = tmp_path / "core"
    xrd("library", "build", "--source", "core-mof", "--limit", "3", "--out", str(out), "--workers", "2", "--quiet")
    lib = Library.load(out, verify=True)
    assert len(lib) == 3
    assert lib.entries[0]["name"] == "HKUST-1" and lib.entries[0]["refcode"] == "FIQCEN"
    assert lib.index_of("Cu-BTC") == 0
    for e in lib.entries:
        assert e["space_group"].replace(" ", "") == "P1" and e["variants"] and e["source"].startswith("2019-")
        assert len(e["cell"]) == 6 and e["volume"] > 0 and e["metals"]
    held = lib.heldout()
    if held is not None:  # the named stems chosen first decide whether there are other determinations
        for e in held.entries:
            assert lib.refcodes[e["class_index"]] == e["class_refcode"] != e["refcode"]
            assert e["refcode"][:6] == e["class_refcode"][:6] and isinstance(e["same_phase"], bool)
    info = json.loads(xrd("library", "info", "--library", str(out), "--json").stdout)
    assert [e["refcode"] for e in info["entries"]] == list(lib.refcodes)


def test_relabel_renames_without_touching_classes(cif_library, tmp_path):
    from xrd_agent.library.build import relabel
    from xrd_agent.library.names import CommonName

    lib_dir = tmp_path / "copy"
    shutil.copytree(cif_library[0], lib_dir)
    before = Library.load(lib_dir)
    named, changed = relabel(lib_dir, {"SALLAT_clean": CommonName("SALLAT_clean", "Cd test MOF", ("CdX",), None, False)})
    after = Library.load(lib_dir, verify=True)
    assert (named, changed) == (1, 2)  # SALLAT named; NaCl loses 'rock salt' (not in this table)
    assert after.refcodes == before.refcodes and np.array_equal(after.patterns16, before.patterns16)
    assert after.index_of("CdX") == 1 and after.entries[0]["name"] == "NaCl"


def test_shipped_default_library_meets_its_contract():
    from xrd_agent.library.artifact import default_library_path

    path = default_library_path()
    lib = Library.load(path, verify=True)
    assert len(lib) >= 1012 and len(set(e["stem"] for e in lib.entries)) == len(lib)
    for name in ("HKUST-1", "MOF-199", "Cu-BTC", "MOF-5", "IRMOF-1", "ZIF-8", "ZIF-67", "ZIF-7", "ZIF-9",
                 "MOF-74(Zn)", "CPO-27-Co", "Mg-MOF-74", "MOF-74(Ni)", "MOF-74(Mn)", "MOF-74(Fe)", "UiO-66",
                 "UiO-67", "MIL-53(Al)", "MIL-53(Cr)", "MIL-53(Fe)", "MIL-47", "MIL-88B(Cr)", "MIL-100(Fe)",
                 "MIL-101(Cr)", "MIL-68(In)", "MOF-177", "PCN-222", "DUT-8(Ni)", "DUT-49"):
        lib.index_of(name)
    for e in lib.entries:
        assert {"refcode", "name", "aliases", "formula", "metals", "cell", "volume", "space_group",
                "variants", "doi", "source"} <= set(e)
    size = sum(p.stat().st_size for p in path.glob("*") if p.is_file())
    held = lib.heldout()
    assert held is not None
    held_size = sum(p.stat().st_size for p in (path / "heldout").glob("*"))
    assert size <= 20e6 and held_size <= 10e6
    for e in held.entries:
        assert lib.refcodes[e["class_index"]] == e["class_refcode"] and e["stem"] == lib.entries[e["class_index"]]["stem"]
    selection = (path / "selection.txt").read_text().splitlines()[1:]
    assert [line.split("\t")[2] for line in selection] == list(lib.refcodes)


def _crash_on_nacl(job):
    """Stands in for a C extension that kills its process on one particular CIF."""
    import os

    from xrd_agent.library.build import simulate_job

    if job.key == "NaCl":
        os._exit(11)
    return simulate_job(job)


def test_a_worker_that_dies_costs_only_its_own_cif():
    from xrd_agent.library.build import Job, run_jobs

    jobs = [Job(p.stem, p.name, p.read_text()) for p in sorted(CIF_DIR.glob("*.cif"))]
    outcomes = {o.key: o for o in run_jobs(jobs, len(jobs), workers=2, progress=False, func=_crash_on_nacl)}
    assert set(outcomes) == {j.key for j in jobs}
    assert "process died" in outcomes["NaCl"].error
    assert outcomes["SALLAT_clean"].ok and outcomes["SUHHOT_clean"].ok
    assert "cannot be read" in outcomes["bad_truncated"].error
