"""Shared test fixtures: real instrument exports and measured scans copied into tests/data.

The copies carry their attribution and licences (tests/data/fixtures/scans/README.md,
tests/data/real-scans/README.md); no test reads outside the repository.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
FIXTURES = DATA / "fixtures" / "scans"
REAL_SCANS = DATA / "real-scans"


def fixture_files() -> list[Path]:
    return sorted(p for p in FIXTURES.iterdir() if p.name not in {"README.md", "expected.json"})


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"real instrument fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def expected() -> dict:
    return json.loads((FIXTURES / "expected.json").read_text())


def wait_until(condition, timeout: float = 60.0, what: str = "condition"):
    """Poll ``condition`` until it returns something truthy (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout} s")
