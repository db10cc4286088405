"""Hostile input at reader level: the whole generated corpus through the real readers.

Every file must give a valid Scan or a ScanError (``reject`` cases: a ScanError), never
another exception, a hang or a dead process. The readers run in child processes with a
per-file deadline (xrd_agent.bench.sandbox), so a hang fails this test instead of freezing it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from xrd_agent.bench.hostile import check, violation
from xrd_agent.bench.sandbox import DIED, ERROR, HANG, REJECTED, SCAN, Outcome, run_isolated
from xrd_agent.testing.hostile import EITHER, REJECT, VALID, Corpus, HostileCase, generate

FAMILIES = {"truncation", "bitflip", "magic_junk", "absurd_count", "zip_bomb", "xml_bomb", "huge",
            "deep_folder", "symlink", "odd_name", "not_regular", "structure"}


@pytest.fixture(scope="module")
def corpus(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    # 60 flips per fixture instead of the command's 100: the same families, ~2,600 files, a faster suite.
    return generate(fixtures_dir, tmp_path_factory.mktemp("hostile") / "corpus", seed=0, flips_per_fixture=60)


def test_corpus_covers_every_attack_and_every_fixture(corpus: Corpus, fixtures_dir: Path) -> None:
    assert len(corpus.cases) >= 2000
    assert set(corpus.counts()) == FAMILIES
    truncated = {c.source for c in corpus.cases if c.family == "truncation"}
    fixtures = {p.name for p in fixtures_dir.iterdir() if p.suffix.lower() not in {".md", ".json"}}
    assert fixtures <= truncated
    # Sparse files really are beyond the 256 MiB cap and cost no disk.
    huge = [corpus.root / c.name for c in corpus.cases if c.kind == "sparse"]
    assert max(os.stat(p).st_size for p in huge) >= 2**40
    assert all(os.stat(p).st_blocks * 512 < 2**20 for p in huge)
    # Links lead outside the corpus folder; FIFOs are FIFOs.
    links = [corpus.root / c.name for c in corpus.cases if c.kind == "symlink"]
    assert links and all(p.is_symlink() for p in links)
    assert any(not Path(os.path.realpath(p)).is_relative_to(corpus.root) for p in links)


def test_corpus_is_reproducible_from_its_seed(fixtures_dir: Path, tmp_path: Path) -> None:
    small = dict(flips_per_fixture=3, junk=20, bomb_bytes=2**20, huge_sizes=(300 * 2**20,))
    # One fixture of each binary layout and the smallest BRML keep this quick.
    subset = tmp_path / "fixtures"
    subset.mkdir()
    for name in ("BT86.raw", "TwoTheta_scan_scrambled.raw", "empyrean.xrdml", "Si-Std_SRM640d_D8D_20-97_7_16hm.brml"):
        shutil.copyfile(fixtures_dir / name, subset / name)
    fixtures_dir = subset

    def digest(corpus: Corpus) -> list[tuple[str, str]]:
        return [(c.name, hashlib.sha256((corpus.root / c.name).read_bytes()).hexdigest())
                for c in corpus.cases if c.kind == "file"]

    a = generate(fixtures_dir, tmp_path / "a", seed=7, **small)
    b = generate(fixtures_dir, tmp_path / "b", seed=7, **small)
    c = generate(fixtures_dir, tmp_path / "c", seed=8, **small)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)
    loaded = Corpus.load_manifest(a.save_manifest())
    assert loaded.cases == a.cases  # names with newlines and undecodable bytes survive JSON


def test_every_hostile_file_is_a_scan_or_a_scan_error(corpus: Corpus) -> None:
    report = check(corpus, workers=2, timeout_s=15.0)
    assert report.corpus_size == len(corpus.cases)
    assert not report.violations, "\n".join(v.line() for v in report.violations)
    # The corpus bites: most files are rejected, and for a reason a person can read.
    rejected = sum(c.get(REJECTED, 0) for c in report.by_family.values())
    assert rejected > len(corpus.cases) // 2
    assert report.by_family["odd_name"].get(SCAN) == report.by_family["odd_name"].get(SCAN, 0) > 0


def test_violation_rules() -> None:
    case = HostileCase("x.raw", "truncation", None, "", REJECT)
    ok = Outcome("x.raw", REJECTED, "truncated", "the file ends early", 0.01)
    assert not violation(case, ok)
    assert violation(case, Outcome("x.raw", SCAN, "", "", 0.01))
    assert violation(case, Outcome("x.raw", REJECTED, "truncated", "  ", 0.01))
    assert violation(HostileCase("x", "f", None, "", VALID), ok)
    for status in (ERROR, HANG, DIED):
        assert violation(HostileCase("x", "f", None, "", EITHER), Outcome("x", status, "", "", 0.0))


# Tasks for the sandbox test: module-level so spawned workers can import them.
def _sleepy(path: str) -> Outcome:
    if path == "hang":
        time.sleep(600)
    if path == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if path == "oom":
        bytearray(8 * 2**30)
    return Outcome(path, SCAN, "", "", 0.0)


def test_sandbox_reports_hangs_deaths_and_memory_blowups_and_carries_on() -> None:
    paths = ["a", "hang", "b", "die", "oom", "c"]
    t0 = time.monotonic()
    # A deadline generous enough for a loaded 2-core machine to start a worker (a 1.5 s one
    # flagged plain files as hangs at load average 14); the hang sleeps far past it.
    out = run_isolated(paths, workers=2, timeout_s=10, memory_bytes=2**30, task=_sleepy)
    assert time.monotonic() - t0 < 300  # the hang was cut off, not waited for (it sleeps 600 s)
    status = {o.path: o.status for o in out}
    assert [o.path for o in out] == paths
    assert status == {"a": SCAN, "hang": HANG, "b": SCAN, "die": DIED, "oom": SCAN, "c": SCAN} or (
        status["oom"] != SCAN and {k: v for k, v in status.items() if k != "oom"}
        == {"a": SCAN, "hang": HANG, "b": SCAN, "die": DIED, "c": SCAN})


def _service_sample(corpus: Corpus) -> list[HostileCase]:
    """Every special entry (links, FIFOs, folders, sparse files, odd names, bombs) and a few
    of each mutation family: what can wedge a service, without the bulk."""
    picked: list[HostileCase] = []
    per_family: dict[str, int] = {}
    for case in corpus.cases:
        special = case.kind != "file" or case.family in {"odd_name", "deep_folder", "zip_bomb", "xml_bomb"}
        if special or per_family.get(case.family, 0) < 4:
            picked.append(case)
            per_family[case.family] = per_family.get(case.family, 0) + 1
    return picked


def test_a_running_service_rejects_hostile_files_and_keeps_identifying(corpus: Corpus, tmp_path: Path) -> None:
    from xrd_agent.bench import service_hostile

    sample = _service_sample(corpus)
    keep = {c.name for c in sample}
    result = service_hostile.run(corpus, workdir=tmp_path, engine="cosine", batch=40, pause_s=0.2, timeout_s=45,
                                 stop_timeout_s=20, stall_s=20,
                                 exclude=frozenset(c.name for c in corpus.cases if c.name not in keep),
                                 log=lambda *_: None)
    assert result.alive
    assert result.ok, "\n".join(result.lines())
    assert result.rejected > result.hostile // 2
