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
