"""One firmware-profile selection: the service, ``profiles --match`` and ``identify`` agree.

A RAW4 ``*.raw`` and a RAW1 ``*.raw`` share a file name pattern; only the content tells
them apart, so every place that picks a profile must look at the format.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, fixture_files

from xrd_agent.commands._scanfiles import ScanFiles
from xrd_agent.config import Config
from xrd_agent.profiles import load_profiles
from xrd_agent.service.instrument import Instrument


def _names(profiles: dict) -> dict[str, str | None]:
    return {name: (p.name if p is not None else None) for name, p in profiles.items()}


def test_the_service_profiles_match_and_identify_choose_the_same_profile_for_every_fixture():
    files = fixture_files()
    service = Instrument(Config())
    by_service = _names({p.name: service.profile_for(p) for p in files})

    cli = subprocess.run([sys.executable, "-m", "xrd_agent", "profiles", "--json", "--match", *map(str, files)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    by_match = {row["file"].rsplit("/", 1)[-1]: row["profile"] for row in json.loads(cli.stdout)}

    identify = ScanFiles(files, None, profiles=list(load_profiles().values()))
    by_identify = _names({p.name: identify.profile_of(p) for p in files})

    assert by_service == by_match == by_identify
    assert by_service["TwoTheta_scan_scrambled.raw"] == "diffrac-suite-raw4"  # RAW4 content, *.raw name
    assert by_service["BT86.raw"] == "diffrac-plus-raw"
    assert by_service["empyrean.xrdml"] is None  # a PANalytical file: no D8 profile claims it


def test_a_raw4_file_takes_its_sample_id_and_settle_rule_from_the_raw4_profile():
    raw4 = next(p for p in fixture_files() if p.name == "TwoTheta_scan_scrambled.raw")
    service = Instrument(Config())
    assert service.profile_for(raw4).name == "diffrac-suite-raw4"
    assert not service.settle_only(raw4)
