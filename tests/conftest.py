"""Shared test fixtures: the real instrument exports in ../shared/fixtures/scans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "scans"


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
