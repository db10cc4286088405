"""Firmware profiles: the bundled TOMLs, validation on load, file matching, sample ids, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xrd_agent.errors import ProfileError
from xrd_agent.profiles import (
    FirmwareProfile,
    bundled_dir,
    load_profile,
    load_profiles,
    profile_for,
    select,
)
from xrd_agent.readers import detect_format, formats, read_scan

from conftest import FIXTURES, REPO, fixture_files

VALID = """
name = "my-d8"
description = "A lab's own export"
software = "DIFFRAC.SUITE"
formats = ["brml"]
completeness = "reader"
settle_s = 3
polling = false

[files]
watch = ["*.brml"]
ignore = ["~$*", "*.tmp"]

[radiation]
anode = "Co"

[sample_id]
metadata = "sample_id"
filename_regex = '^(?P<sample>[A-Z]{2}\\d+)'
placeholders = ["Commander Sample ID"]

[two_theta]
min = 5
max = 50
step = 0.02
"""


def _write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bundled() -> dict[str, FirmwareProfile]:
    return load_profiles()


# ------------------------------------------------------------------ bundled profiles


def test_bundled_profiles_load(bundled: dict[str, FirmwareProfile]) -> None:
    assert bundled_dir() == REPO / "firmware_profiles"
    files = sorted(bundled_dir().glob("*.toml"))
    assert len(bundled) == len(files) >= 4
    assert {"diffrac-suite-brml", "diffrac-suite-raw4", "diffrac-plus-raw", "ascii-export"} <= set(bundled)
    for profile in bundled.values():
        assert profile.source is not None and profile.source.stem == profile.name
        assert profile.description and profile.software


def test_bundled_formats_are_formats_the_readers_know(bundled: dict[str, FirmwareProfile]) -> None:
    known = set(formats())
    for profile in bundled.values():
        assert set(profile.formats) <= known, (profile.name, profile.formats, known)


def test_every_d8_fixture_is_claimed_by_a_profile_for_its_format(bundled: dict[str, FirmwareProfile]) -> None:
    claimed = {}
    for path in fixture_files():
        fmt = detect_format(path)
        profile = profile_for(path, bundled.values(), format=fmt)
        claimed[path.name] = profile.name if profile else None
    assert claimed["SRM1976b_260105_D8A_20-155_0.008_4s_19hm.brml"] == "diffrac-suite-brml"
    assert claimed["TwoTheta_scan_scrambled.raw"] == "diffrac-suite-raw4"
    assert claimed["BT86.raw"] == claimed["format1.raw"] == "diffrac-plus-raw"
    assert claimed["BT86_.UXD"] == "ascii-export"
    assert claimed["empyrean.xrdml"] is None  # a PANalytical file: no D8 profile claims it
    assert all(claimed[name] for name in claimed if name != "empyrean.xrdml")


@pytest.mark.parametrize(
    "name",
    [
        "~$SRM1976b_260105.brml",  # Office-style owner file
        ".~lock.BT86_.UXD#",  # LibreOffice lock
        "SRM1976b_260105.brml.part",
        "scan.raw.tmp",
        ".hidden_scan.brml",
        ".DS_Store",
        "Thumbs.db",
        "desktop.ini",
    ],
)
def test_temporary_and_lock_files_are_ignored(bundled: dict[str, FirmwareProfile], name: str) -> None:
    assert profile_for(name, bundled.values()) is None
    assert any(p.ignores(name) for p in bundled.values())
    assert not any(p.matches(name) for p in bundled.values())


def test_matching_is_on_the_file_name_and_case_insensitive(bundled: dict[str, FirmwareProfile]) -> None:
    brml_profile = bundled["diffrac-suite-brml"]
    assert brml_profile.matches(r"/mnt/d8/export/2026_11/A52-B128-S_20-140_0.008_4s_17h_D6Pm.BRML")
    assert brml_profile.matches(Path("Si-Std_SRM640d_D8D_20-97_7_16hm.brml"))
    assert not brml_profile.matches("/mnt/d8/export.brml.d/notes.txt")
    assert not brml_profile.matches("report.brml.bak")
    assert profile_for("BT86.RAW", bundled.values(), format="bruker_raw4").name == "diffrac-suite-raw4"
    assert profile_for("notes.docx", bundled.values()) is None


def test_select(bundled: dict[str, FirmwareProfile]) -> None:
    profiles = load_profiles()
    assert select(profiles, "auto") == tuple(profiles.values()) == select(profiles.values(), "auto")
    assert select(profiles, "ascii-export") == (bundled["ascii-export"],)
    with pytest.raises(ProfileError, match="unknown firmware profile 'nope'; known: ascii-export"):
        select(profiles, "nope")


# ------------------------------------------------------------------ sample ids and radiation


def test_sample_id_from_metadata(bundled: dict[str, FirmwareProfile]) -> None:
    scan = read_scan(FIXTURES / "SRM1976b_260105_D8A_20-155_0.008_4s_19hm.brml")
    assert bundled["diffrac-suite-brml"].sample_id(scan) == "SRM1976b_260105"


def test_placeholder_sample_name_falls_back_to_the_file_name(bundled: dict[str, FirmwareProfile]) -> None:
    scan = read_scan(FIXTURES / "23-012-AG_2thomegascan_long.brml")
    assert scan.sample_id == "Commander Sample ID"
    assert bundled["diffrac-suite-brml"].sample_id(scan) == "23-012-AG"


def test_sample_id_from_another_metadata_key_and_from_file_names(tmp_path: Path) -> None:
    text = VALID.replace('metadata = "sample_id"', 'metadata = "sample_position"')
    profile = load_profile(_write(tmp_path, text))
    scan = read_scan(FIXTURES / "SRM1976b_260105_D8A_20-155_0.008_4s_19hm.brml")
    assert profile.sample_id(scan) == "MAN"
    assert profile.sample_from_filename("/export/AB1234_MOF-5_run2.brml") == "AB1234"
    assert profile.sample_from_filename("no-id-here.brml") is None
    bare = load_profile(_write(tmp_path, VALID.replace('metadata = "sample_id"\n', ""), "bare.toml"))
    assert bare.sample_id(scan) is None  # the file name has no AB1234-style id


def test_default_radiation(bundled: dict[str, FirmwareProfile], tmp_path: Path) -> None:
    wavelength = bundled["ascii-export"].wavelength()
    assert wavelength is not None and wavelength.anode == "Cu"
    assert wavelength.alpha1 == pytest.approx(1.540598)
    assert bundled["diffrac-suite-brml"].wavelength() is None
    custom = load_profile(_write(tmp_path, VALID.replace('anode = "Co"', 'anode = "Co"\nwavelength = 1.7889')))
    assert custom.wavelength().alpha1 == pytest.approx(1.7889) and custom.wavelength().anode == "Co"


def test_range_notes(bundled: dict[str, FirmwareProfile]) -> None:
    scan = read_scan(FIXTURES / "SRM1976b_260105_D8A_20-155_0.008_4s_19hm.brml")
    notes = bundled["diffrac-suite-brml"].range_notes(scan)
    assert notes == ("the scan starts at 20.00 deg 2-theta; 5 deg was expected",)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t + 'colour = "blue"\n', r"unknown key\(s\) two_theta.colour"),
        (lambda t: t.replace("polling = false", "poling = false"), r"unknown key\(s\) poling"),
        (lambda t: t.replace("[radiation]", "[radiation]\nkv = 40"), r"unknown key\(s\) radiation.kv"),
        (lambda t: t.replace("settle_s = 3", 'settle_s = "3"'), "settle_s must be a number, not '3'"),
        (lambda t: t.replace("settle_s = 3", "settle_s = true"), "settle_s must be a number, not True"),
        (lambda t: t.replace('formats = ["brml"]', 'formats = "brml"'), "formats must be a list of strings"),
        (lambda t: t.replace("polling = false", 'polling = "no"'), "polling must be true or false"),
        (lambda t: t.replace('[files]\nwatch = ["*.brml"]\nignore = ["~$*", "*.tmp"]\n', "").replace(
            'name = "my-d8"', 'name = "my-d8"\nfiles = 3'), "files must be a table"),
        (lambda t: t.replace("(?P<sample>[A-Z]{2}\\d+)", "(?P<sample>[A-Z"), "not a valid regular expression"),
        (lambda t: t.replace("(?P<sample>[A-Z]{2}\\d+)", "([A-Z]{2}\\d+)"), r"named group \(\?P<sample>"),
        (lambda t: t.replace('"*.tmp"', '"*"'), "would match every file"),
        (lambda t: t.replace('watch = ["*.brml"]', 'watch = ["export/*.brml"]'), "no folders"),
        (lambda t: t.replace('watch = ["*.brml"]', 'watch = ["**.brml"]'), "no folders, no"),
        (lambda t: t.replace('watch = ["*.brml"]', "watch = []"), "at least one glob"),
        (lambda t: t.replace('"reader"', '"maybe"'), "completeness must be one of reader, settle"),
        (lambda t: t.replace('anode = "Co"', 'anode = "Xx"'), "'Xx' is not one of Cu"),
        (lambda t: t.replace("settle_s = 3", "settle_s = 86400"), "between 0 and 3600"),
        (lambda t: t.replace("min = 5", "min = 60"), r"min \(60\) must be below max \(50\)"),
        (lambda t: t.replace('name = "my-d8"', 'name = "My D8"'), "must be lower-case"),
        (lambda t: t.replace('name = "my-d8"\n', ""), "missing key name"),
        (lambda t: t.replace("[files]\n", "[unused]\n"), "unknown key"),
        (lambda t: t + "[[broken", "not valid TOML"),
    ],
)
def test_invalid_profiles_fail_clearly(tmp_path: Path, edit, message: str) -> None:
    path = _write(tmp_path, edit(VALID))
    with pytest.raises(ProfileError, match=message) as info:
        load_profile(path)
    assert str(path) in str(info.value)


def test_the_valid_example_loads(tmp_path: Path) -> None:
    profile = load_profile(_write(tmp_path, VALID))
    assert profile.settle_s == 3.0 and isinstance(profile.settle_s, float)
    assert profile.two_theta_min == 5.0 and profile.default_anode == "Co"


def test_missing_files_table(tmp_path: Path) -> None:
    text = VALID.replace('[files]\nwatch = ["*.brml"]\nignore = ["~$*", "*.tmp"]\n', "")
    with pytest.raises(ProfileError, match=r"missing table \[files\]"):
        load_profile(_write(tmp_path, text))


def test_folders_duplicates_and_overrides(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no such folder"):
        load_profiles(tmp_path / "absent")
    with pytest.raises(ProfileError, match="holds no"):
        load_profiles(tmp_path)
    _write(tmp_path, VALID, "a.toml")
    _write(tmp_path, VALID, "b.toml")
    with pytest.raises(ProfileError, match="'my-d8' is already used by"):
        load_profiles(tmp_path)
    lab = tmp_path / "lab"
    lab.mkdir()
    override = VALID.replace('name = "my-d8"', 'name = "diffrac-suite-brml"').replace("settle_s = 3", "settle_s = 30")
    _write(lab, override, "brml.toml")
    merged = load_profiles(extra_dirs=[lab])
    assert list(merged) == list(load_profiles())  # replaced in place
    replaced = merged["diffrac-suite-brml"]
    assert replaced.settle_s == 30.0 and replaced.source == lab / "brml.toml"


def test_unreadable_profile(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(VALID.replace("A lab's own export", "Ger\xe4t").encode("latin-1"))
    with pytest.raises(ProfileError, match="not UTF-8"):
        load_profile(path)
    with pytest.raises(ProfileError, match="cannot be read"):
        load_profile(tmp_path / "absent.toml")


# ------------------------------------------------------------------ the command


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xrd_agent", "profiles", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_cli_lists_profiles_as_text_and_json() -> None:
    text = _cli()
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0].split()[:2] == ["NAME", "FORMATS"]
    assert "diffrac-suite-brml  brml" in text.stdout
    listed = json.loads(_cli("--json").stdout)
    assert [p["name"] for p in listed] == list(load_profiles())
    brml_entry = next(p for p in listed if p["name"] == "diffrac-suite-brml")
    assert brml_entry["watch"] == ["*.brml"] and brml_entry["settle_s"] == 5.0


def test_cli_match_and_extra_dir(tmp_path: Path) -> None:
    done = _cli("--match", "SRM1976b_260105.brml", "~$SRM1976b_260105.brml", "notes.docx")
    assert done.returncode == 1  # not every name is claimed
    lines = done.stdout.splitlines()
    assert lines[0] == "SRM1976b_260105.brml: diffrac-suite-brml (sample from file name: SRM1976b)"
    assert lines[1].startswith("~$SRM1976b_260105.brml: ignored as a temporary or lock file")
    assert lines[2] == "notes.docx: no profile watches this name"
    _write(tmp_path, VALID)
    extra = _cli("--dir", str(tmp_path), "--json")
    assert extra.returncode == 0, extra.stderr
    mine = [p for p in json.loads(extra.stdout) if p["name"] == "my-d8"]
    assert mine and mine[0]["source"] == str(tmp_path / "p.toml") and mine[0]["default_anode"] == "Co"


def test_cli_reports_an_invalid_profile(tmp_path: Path) -> None:
    _write(tmp_path, VALID.replace("settle_s = 3", 'settle_s = "soon"'))
    done = _cli("--dir", str(tmp_path))
    assert done.returncode == 2
    assert "settle_s must be a number" in done.stderr and "Traceback" not in done.stderr


def test_cli_match_reads_existing_files_by_content() -> None:
    raw4 = FIXTURES / "TwoTheta_scan_scrambled.raw"
    done = _cli("--match", str(raw4), str(FIXTURES / "empyrean.xrdml"), "--json")
    assert done.returncode == 1  # the PANalytical file is claimed by no D8 profile
    first, second = json.loads(done.stdout)
    assert (first["format"], first["profile"]) == ("bruker_raw4", "diffrac-suite-raw4")
    assert (second["format"], second["profile"]) == ("xrdml", None)
