"""The project carries its own test data: a clone without the sibling folder of shared notes must pass."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import DATA, FIXTURES, REAL_SCANS, REPO

# A path that climbs out of the repository: the sibling folder by a relative path or by name,
# the repository's parent, or two or more levels of parents. Spelt in pieces so that this
# file does not match itself.
_SIBLING = "sha" + "red"
_OUTSIDE = re.compile(r"\.\./" + _SIBLING + r"|[\"']" + _SIBLING + r"[\"']|REPO\.par" + r"ent|par" + r"ents\[[2-9]\]")


def test_data_folders_are_inside_the_repository():
    for folder in (DATA, FIXTURES, REAL_SCANS):
        assert folder.resolve().is_relative_to(REPO), folder
        assert folder.is_dir(), f"{folder} is missing: the test data must be committed"


def test_every_copied_file_keeps_its_attribution():
    assert "Apache-2.0" in (FIXTURES / "README.md").read_text()
    assert (REAL_SCANS / "README.md").is_file()
    assert (REAL_SCANS / "mof" / "LICENSE.xraypro-web").is_file()
    assert (REAL_SCANS / "mof" / "LICENSE.XRED").is_file()
    assert (REAL_SCANS / "byo-cif" / "LICENSE.XRED").is_file()


def test_no_test_or_ci_step_reads_outside_the_repository():
    sources = [*REPO.joinpath("tests").glob("*.py"), REPO / ".ci" / "run", REPO / "Makefile",
               *REPO.joinpath("scripts").glob("*")]
    offenders = []
    for path in sources:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if _OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "paths outside the repository:\n" + "\n".join(offenders)


def test_the_checker_catches_a_path_outside():
    assert _OUTSIDE.search('FIXTURES = REPO.par' + 'ent / "' + _SIBLING + '" / "fixtures"')
    assert _OUTSIDE.search("open('../" + _SIBLING + "/real-scans/x.csv')")
    assert not _OUTSIDE.search('FIXTURES = DATA / "fixtures" / "scans"')
