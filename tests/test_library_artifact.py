import json

import numpy as np
import pytest

from xrd_agent.errors import LibraryError
from xrd_agent.library.artifact import Library, Sticks
from xrd_agent.pattern import GRID_POINTS


def small_library() -> Library:
    rng = np.random.default_rng(0)
    entries = [{"refcode": f"ABCDE{i}", "name": f"MOF-{i}", "aliases": [f"alias{i}"]} for i in range(3)]
    patterns = rng.random((3, GRID_POINTS))
    sticks = [Sticks(np.array([10.0 + i]), np.array([1.0]), np.array([[1, 0, 0]])) for i in range(3)]
    return Library.from_patterns(entries, patterns, sticks, {"version": "test-1"})


def test_round_trip(tmp_path):
    lib = small_library()
    lib.save(tmp_path / "lib")
    again = Library.load(tmp_path / "lib", verify=True)
    assert again.refcodes == lib.refcodes and again.version == "test-1"
    assert np.array_equal(again.patterns16, lib.patterns16)
    assert again.sticks(2).two_theta.tolist() == [12.0]
    assert again.index_of("alias1") == 1 and again.index_of("mof-2") == 2
    assert again.heldout() is None


def test_damaged_library_is_refused(tmp_path):
    small_library().save(tmp_path / "lib")
    (tmp_path / "lib" / "patterns.npz").write_bytes(b"not a zip")
    with pytest.raises(LibraryError, match="checksum"):
        Library.load(tmp_path / "lib", verify=True)
    with pytest.raises(LibraryError):
        Library.load(tmp_path / "lib")


def test_foreign_folder_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(LibraryError, match="not an xrd-agent library"):
        Library.load(tmp_path)
    with pytest.raises(LibraryError, match="no readable library"):
        Library.load(tmp_path / "missing")
