"""The worker on real files: read, identify (cosine engine on a small library), judge,
record, publish; every alert reason a scan can raise; duplicates; crashes around publishing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from xrd_agent import messages, readers
from xrd_agent.config import Config, merge
from xrd_agent.decide import aliases_of
from xrd_agent.identification import Flag
from xrd_agent.service.debounce import Due, Signature
from xrd_agent.service.engines import CosineEngine
from xrd_agent.service.expectations import ExpectationBook
from xrd_agent.service.instrument import Instrument
from xrd_agent.service.ledger import Ledger
from xrd_agent.service.pipeline import Identity, Pipeline, Settings
from xrd_agent.service.readings import Readings
from xrd_agent.testing.library import save_tiny_library
from xrd_agent.testing.simulated_d8 import SimulatedD8


@pytest.fixture(scope="module")
def library_dir(tmp_path_factory) -> Path:
    return save_tiny_library(tmp_path_factory.mktemp("lib") / "tiny")


@pytest.fixture(scope="module")
def engine(library_dir) -> CosineEngine:
    return CosineEngine(merge(Config(), {"model": {"library_dir": str(library_dir)}})).load()


class Wire:
    """Stands in for the PUB socket: keeps what was sent, can be told to fail."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.fail = False

    def __call__(self, message) -> bool:
        if self.fail:
            raise OSError("network down")
        messages.validate(message)  # what reaches the wire is valid against the contract
        self.sent.append(dict(message))
        return True

    def topic(self, topic: str) -> list[dict]:
        return [m for m in self.sent if m["topic"] == topic]


class Rig:
    def __init__(self, root: Path, engine: CosineEngine, ledger: Ledger | None = None,
                 expectations: dict[str, list[str]] | None = None) -> None:
        self.folder = root / "export"
        self.folder.mkdir(exist_ok=True)
        self.ledger = ledger or Ledger(root / "state")
        self.wire = Wire()
        config = Config()
        instrument = Instrument(config)
        self.book = ExpectationBook(expectations or {}, 5, self.ledger)
        self.pipeline = Pipeline(
            ledger=self.ledger, engine=engine, send=self.wire, expectations=self.book,
            identity=Identity("test-agent", "d8"), root=self.folder,
            read=readers.read_file,
            wavelength_for=instrument.wavelength_for, sample_id_of=instrument.sample_id,
            settings=Settings(aliases=aliases_of(engine.library_)),
        )
        self.d8 = SimulatedD8(self.folder, engine.library_, stage_delay_s=0.0, seed=11)

    def run(self, *paths: Path) -> list[dict]:
        """Hand ``paths`` to the worker as due files and process them as one batch."""
        before = len(self.wire.sent)
        dues = [Due(p, Signature.of(os.lstat(p)), time.time()) for p in paths]
        self.pipeline._process(dues)
        return self.wire.sent[before:]


def _reasons(out: list[dict]) -> list[str]:
    return sorted(m["reason"] for m in out if m["topic"] == messages.ALERT)


def test_a_scan_is_identified_recorded_and_published(tmp_path, engine):
    rig = Rig(tmp_path, engine)
    e = rig.d8.export("S-1.raw", rig.d8.measure("S-1", ["TSTMOF04"]))
    (ident,) = rig.run(e.path)
    assert ident["topic"] == messages.IDENTIFICATION and ident["seq"] == 1
    assert ident["sample_id"] == "S-1" and ident["format"] == "bruker_raw4"
    assert ident["result"]["top"][0]["refcode"] == "TSTMOF04"
    assert ident["duplicate_of"] is None and ident["scan_id"] == readers.read_scan(e.path).sha256
    assert rig.ledger.unsent() == []
    assert rig.run(e.path) == []  # the same file version again: nothing, not even a read


def test_a_byte_identical_reexport_points_at_the_original(tmp_path, engine):
    rig = Rig(tmp_path, engine)
    first = rig.d8.export("S-1.brml", rig.d8.measure("S-1", ["TSTMOF02"]))
    (orig,) = rig.run(first.path)
    again = rig.d8.reexport(first, "S-1 (2).brml")
    (dup,) = rig.run(again.path)
    assert dup["duplicate_of"] == orig["seq"] and dup["result"] == orig["result"]
    assert dup["scan_id"] == orig["scan_id"] and dup["seq"] > orig["seq"]
    # the same path rewritten with the same bytes is a re-export too
    data = first.path.read_bytes()
    first.path.write_bytes(data)
    os.utime(first.path, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    (dup2,) = rig.run(first.path)
    assert dup2["duplicate_of"] == orig["seq"]
    # two identical files in one batch: one identification, one duplicate
    a = rig.d8.export("T-1.raw", rig.d8.measure("T-1", ["TSTMOF05"]))
    b = rig.d8.reexport(a, "T-1-copy.raw")
    out = rig.run(a.path, b.path)
    assert [m["duplicate_of"] for m in out] == [None, out[0]["seq"]]


def test_amorphous_scan_raises_amorphous_alert(tmp_path, engine):
    rig = Rig(tmp_path, engine)
    e = rig.d8.export("S-2.xy", rig.d8.measure("S-2", kind="amorphous"))
    out = rig.run(e.path)
    assert "amorphous" in out[0]["result"]["flags"]
    (alert,) = rig.wire.topic(messages.ALERT)
    assert alert["reason"] == "amorphous" and alert["severity"] == "critical"
    assert alert["result"] == out[0]["result"] and alert["scan_id"] == out[0]["scan_id"]


def test_unknown_phase_alert(tmp_path, engine):
    rig = Rig(tmp_path, engine)
    e = rig.d8.export("S-3.raw", rig.d8.measure("S-3", kind="unknown"))
    out = rig.run(e.path)
    assert _reasons(out) == ["unknown_phase"]


def test_mixture_alert(tmp_path, engine):
    rig = Rig(tmp_path, engine)
    m = rig.d8.measure("S-4", ["TSTMOF03", "TSTMOF07"], weights=[0.6, 0.4])
    out = rig.run(rig.d8.export("S-4.brml", m).path)
    assert Flag.MIXTURE.value in out[0]["result"]["flags"]
    assert _reasons(out) == ["mixture"]


@pytest.mark.parametrize("source", ["sidecar", "control", "config"])
def test_expected_phase_missing(tmp_path, engine, source):
    rig = Rig(tmp_path, engine, expectations={"S-5": ["TESTMOF-09"]} if source == "config" else None)
    if source == "control":
        rig.book.expect("S-5", ["TSTMOF09"], 1)
    m = rig.d8.measure("S-5", ["TSTMOF01"])
    e = rig.d8.export("S-5.raw", m, expected=("TESTMOF-09",) if source == "sidecar" else (), top_k=1)
    out = rig.run(e.path)
    alerts = rig.wire.topic(messages.ALERT)
    assert [a["reason"] for a in alerts] == ["expected_phase_missing"], out[0]["result"]["top"]
    assert alerts[0]["evidence"]["found"][0] == "TSTMOF01"
    # the expected phase present: no alert (expectation by alias, refcode or name)
    rig.book.expect("S-6", ["tm1"], 1)
    ok = rig.run(rig.d8.export("S-6.raw", rig.d8.measure("S-6", ["TSTMOF01"])).path)
    assert _reasons(ok) == []


def test_an_unreadable_file_is_rejected_with_an_alert_and_the_worker_carries_on(tmp_path, engine):
    rig = Rig(tmp_path, engine)
    bad = rig.d8.export_unreadable("S-7.raw", "S-7")
    good = rig.d8.export("S-8.raw", rig.d8.measure("S-8", ["TSTMOF06"]))
    out = rig.run(bad.path, good.path)
    rejected, alert, ident = out
    assert rejected["topic"] == messages.REJECTED and rejected["error"] == "corrupt"
    assert "not finite" in rejected["reason"] and rejected["scan_id"] is not None
    assert alert["reason"] == "unreadable" and alert["evidence"]["detail"] == rejected["reason"]
    assert ident["topic"] == messages.IDENTIFICATION
    assert rig.run(bad.path) == []  # a rejection is an outcome: not rejected again every rescan


def test_a_symlink_leading_out_of_the_folder_is_rejected_not_followed(tmp_path, engine):
    rig = Rig(tmp_path, engine)
    outside = tmp_path / "elsewhere.raw"
    outside.write_bytes(b"secret")
    link = rig.folder / "S-9.raw"
    link.symlink_to(outside)
    rejected, alert = rig.run(link)
    assert rejected["error"] == "not_a_file" and "outside the export folder" in rejected["reason"]
    assert alert["reason"] == "unreadable"


def test_messages_recorded_but_not_sent_are_sent_again(tmp_path, engine):
    rig = Rig(tmp_path, engine)
    rig.wire.fail = True  # crash-equivalent: committed, the socket never took it
    e = rig.d8.export("S-1.raw", rig.d8.measure("S-1", ["TSTMOF08"]))
    rig.run(e.path)
    assert [m["seq"] for m in rig.ledger.unsent()] == [1]
    rig.wire.fail = False
    assert rig.pipeline.publish_unsent() == 1
    assert [m["seq"] for m in rig.wire.sent] == [1] and rig.ledger.unsent() == []


def test_folder_and_status_notices_go_through_the_ledger(tmp_path, engine):
    rig = Rig(tmp_path, engine)
    rig.pipeline.notify_folder("missing", rig.folder)
    rig.pipeline.notify_status("degraded", "export folder missing")
    rig.pipeline._handle_notices()
    alert, status = rig.wire.sent
    assert alert["reason"] == "folder_missing" and alert["severity"] == "critical"
    assert alert["path"] == str(rig.folder) and alert["scan_id"] is None
    assert status["state"] == "degraded" and [alert["seq"], status["seq"]] == [1, 2]
    assert [m["seq"] for m in rig.ledger.replay(0, 10)[0]] == [1, 2]


def test_the_worker_thread_drains_its_queue_on_stop(tmp_path, engine):
    rig = Rig(tmp_path, engine)
    paths = [rig.d8.export(f"D-{i}.raw", rig.d8.measure(f"D-{i}", ["TSTMOF10"])).path for i in range(5)]
    for p in paths:
        rig.pipeline.queue.put(Due(p, Signature.of(os.lstat(p)), time.time()))
    rig.pipeline.start()
    rig.pipeline.stop(drain=True, timeout=60)
    assert not rig.pipeline.alive
    assert rig.ledger.counts()["identified"] == 5
    recorded = {Path(s["path"]).name for s in rig.ledger.scans()}
    assert recorded == {p.name for p in paths}
    assert len(rig.wire.topic(messages.IDENTIFICATION)) == 5
    assert len(rig.wire.topic(messages.HEARTBEAT)) >= 1


def test_low_coverage_alert(tmp_path, engine):
    from xrd_agent.testing.simulated_d8 import scan_axis

    rig = Rig(tmp_path, engine)
    rig.d8.tt = scan_axis(5.0, 25.0)  # a quick check scan: 20 of the model's 45 degrees
    out = rig.run(rig.d8.export("Q-1.raw", rig.d8.measure("Q-1", ["TSTMOF02"])).path)
    assert "low_coverage" in out[0]["result"]["flags"]
    assert "low_coverage" in _reasons(out)


def test_a_fragment_is_rejected_no_coverage_never_amorphous(tmp_path, engine):
    """A 30-42 deg fragment of a failed synthesis is too little to judge: xrd.rejected with
    no_coverage, no identification and no amorphous alert (issue 12.7)."""
    from xrd_agent.testing.simulated_d8 import scan_axis

    rig = Rig(tmp_path, engine)
    rig.d8.tt = scan_axis(30.0, 42.0)
    out = rig.run(rig.d8.export("Q-2.raw", rig.d8.measure("Q-2", kind="amorphous")).path)
    (rejected,) = rig.wire.topic(messages.REJECTED)
    assert rejected["error"] == "no_coverage" and "15 deg" in rejected["reason"]
    assert not rig.wire.topic(messages.IDENTIFICATION)
    assert "amorphous" not in _reasons(out)


def test_the_queue_is_bounded_and_submit_waits(tmp_path, engine):
    import threading

    rig = Rig(tmp_path, engine)
    small = Pipeline(ledger=rig.ledger, engine=engine, send=rig.wire, expectations=rig.book,
                     identity=Identity("a", "b"), root=rig.folder, read=readers.read_file,
                     queue_size=1)
    p = rig.d8.export("B-1.raw", rig.d8.measure("B-1", ["TSTMOF01"])).path
    due = Due(p, Signature.of(os.lstat(p)), time.time())
    assert small.submit(due)  # fills the queue (the worker is not running)
    stopping = threading.Event()
    threading.Timer(0.5, stopping.set).start()
    assert small.submit(due, stopping) is False  # it waited until told to stop: no unbounded memory
    assert small.depth == 1


def test_a_file_without_read_permission_is_retried_not_rejected(tmp_path, engine, monkeypatch):
    rig = Rig(tmp_path, engine)
    e = rig.d8.export("P-1.raw", rig.d8.measure("P-1", ["TSTMOF03"]))
    e.path.chmod(0)
    if os.geteuid() == 0:  # root reads whatever the mode says: let the check see what a user would
        from xrd_agent.service import pipeline as pipeline_module

        real_access = os.access
        monkeypatch.setattr(pipeline_module.os, "access",
                            lambda p, mode: False if os.stat(p).st_mode & 0o444 == 0 else real_access(p, mode))
    assert rig.run(e.path) == [] and rig.run(e.path) == []
    rig.pipeline._handle_notices()
    (alert,) = rig.wire.topic(messages.ALERT)  # said once
    assert alert["reason"] == "unreadable" and "permission" in alert["evidence"]["detail"]
    assert rig.ledger.scans() == []  # no outcome recorded: nothing sticks
    e.path.chmod(0o644)  # fixed by the operator: no new mtime, and it is read now
    (ident,) = rig.run(e.path)
    assert ident["topic"] == messages.IDENTIFICATION


def test_an_expected_refcode_accepts_another_determination_of_the_same_material():
    from xrd_agent.identification import Candidate, Identification
    from xrd_agent.pattern import Coverage, GateDecision
    from xrd_agent.decide import Expectation
    from xrd_agent.decide import alerts as judge

    ident = Identification(
        top=(Candidate(1, "DOTSOV", "HKUST-1", 0.9), Candidate(2, "OFERUN", "ZIF-8", 0.1)),
        confidence=0.9, flags=frozenset(), gate=GateDecision(False, 0.1, 1.0, 200),
        coverage=Coverage(5.0, 50.0, 1.0))
    aliases = {"FIQCEN": {"fiqcen", "hkust-1", "cu-btc"}, "DOTSOV": {"dotsov", "hkust-1"},
               "OFERUN": {"oferun", "zif-8"}, "GITTOT": {"gittot", "zif-67"}}
    assert judge(ident, Expectation("S", ("FIQCEN",), 1), aliases=aliases) == []
    assert judge(ident, Expectation("S", ("Cu-BTC",), 1), aliases=aliases) == []
    (missing,) = judge(ident, Expectation("S", ("GITTOT",), 2), aliases=aliases)
    assert missing.reason == "expected_phase_missing" and missing.evidence["found"] == ["DOTSOV", "OFERUN"]


def test_a_file_name_that_is_not_utf8_is_processed_not_a_crash(tmp_path, engine):
    rig = Rig(tmp_path, engine)
    good = rig.d8.export("L-1.raw", rig.d8.measure("L-1", ["TSTMOF07"]))
    latin1 = Path(os.fsdecode(os.fsencode(rig.folder) + b"/Probe-\xe9.raw"))  # 'é' from an old Windows share
    os.rename(good.path, latin1)
    junk = Path(os.fsdecode(os.fsencode(rig.folder) + b"/\xff\xfe.raw"))
    junk.write_bytes(b"not a scan")
    out = rig.run(latin1, junk)
    assert [m["topic"] for m in out] == ["xrd.rejected", "xrd.alert", "xrd.identification"]
    assert out[2]["path"].endswith("Probe-\\xe9.raw") and out[0]["path"].endswith("\\xff\\xfe.raw")
    assert rig.ledger.unsent() == []  # all of it went out on the wire
    assert rig.run(latin1, junk) == []  # and is known in the ledger under the same names


def test_a_stuck_engine_makes_the_worker_unhealthy_until_it_moves_again(tmp_path, engine):
    """What the daemon's watchdog pings key on: a hung identification stops them."""
    import threading

    release = threading.Event()

    class StuckEngine:  # the real engine, held up the way a wedged accelerator would hold it
        model_version, library_version = engine.model_version, engine.library_version

        def identify_many(self, scans):
            release.wait(30)
            return engine.identify_many(scans)

    rig = Rig(tmp_path, engine)
    rig.pipeline.engine = StuckEngine()
    rig.pipeline.start()
    try:
        assert _eventually(lambda: rig.pipeline.healthy(max_silence_s=0.5))
        p = rig.d8.export("W-1.raw", rig.d8.measure("W-1", ["TSTMOF01"])).path
        rig.pipeline.submit(Due(p, Signature.of(os.lstat(p)), time.time()))
        assert _eventually(lambda: not rig.pipeline.healthy(max_silence_s=0.5))
        release.set()
        assert _eventually(lambda: rig.pipeline.healthy(max_silence_s=0.5))
        assert _eventually(lambda: rig.wire.topic(messages.IDENTIFICATION))
    finally:
        release.set()
        rig.pipeline.stop(timeout=30)


class HeldEngine:
    """The real engine, held up inside ``identify_many`` until ``release`` is set: a physics
    check that takes long, or an engine that hangs."""

    def __init__(self, engine) -> None:
        import threading

        self.engine = engine
        self.model_version, self.library_version = engine.model_version, engine.library_version
        self.release, self.entered = threading.Event(), threading.Event()

    def identify_many(self, scans):
        self.entered.set()
        self.release.wait(30)
        return self.engine.identify_many(scans)


def _held_rig(tmp_path, engine, **settings):
    """A started rig whose engine is held up inside one scan's identification (``settings``
    applied to the worker first); returns the rig and the event that lets the engine go on."""
    rig = Rig(tmp_path, engine)
    held = HeldEngine(engine)
    rig.pipeline.engine = held
    for key, value in settings.items():
        setattr(rig.pipeline.settings, key, value)
    rig.pipeline.start()
    p = rig.d8.export("H-1.raw", rig.d8.measure("H-1", ["TSTMOF01"])).path
    rig.pipeline.submit(Due(p, Signature.of(os.lstat(p)), time.time()))
    assert held.entered.wait(10)
    return rig, held.release


def test_a_busy_engine_within_its_allowance_is_not_a_hung_one(tmp_path, engine):
    """The physics check takes seconds per scan: while the worker identifies, each scan in the
    engine extends the silence allowed by ``Settings.allowance_s``; past it, the worker is hung."""
    rig, release = _held_rig(tmp_path, engine, allowance_s=60.0)
    try:
        time.sleep(1.0)  # twice the watchdog's silence below, inside the engine
        assert rig.pipeline.healthy(max_silence_s=0.5)
        assert rig.pipeline.silence_limit(0.5) == pytest.approx(60.5)
        rig.pipeline.settings.allowance_s = 0.0  # the allowance spent: now it counts as hung
        assert not rig.pipeline.healthy(max_silence_s=0.5)
        release.set()
        assert _eventually(lambda: rig.wire.topic(messages.IDENTIFICATION))
        assert _eventually(lambda: rig.pipeline.healthy(max_silence_s=0.5))
        assert rig.pipeline.silence_limit(0.5) == 0.5  # nothing in flight: no allowance
    finally:
        release.set()
        rig.pipeline.stop(timeout=30)


def test_while_the_engine_works_heartbeats_and_notices_still_go_out(tmp_path, engine):
    """A physics-checked identification takes seconds to a minute: meanwhile the worker still
    publishes heartbeats (a robot's client would otherwise reconnect to a silent publisher) and
    records what the rest of the agent reports (here a vanished export folder)."""
    rig, release = _held_rig(tmp_path, engine, heartbeat_s=0.2)
    try:
        before = len(rig.wire.topic(messages.HEARTBEAT))
        rig.pipeline.notify_folder("missing", tmp_path / "export")
        assert _eventually(lambda: len(rig.wire.topic(messages.HEARTBEAT)) >= before + 3)
        assert _eventually(lambda: [m for m in rig.wire.topic(messages.ALERT) if m["reason"] == "folder_missing"])
        assert not rig.wire.topic(messages.IDENTIFICATION)  # the engine is still at it
        release.set()
        assert _eventually(lambda: rig.wire.topic(messages.IDENTIFICATION))
    finally:
        release.set()
        rig.pipeline.stop(timeout=30)


def test_with_the_physics_check_scans_are_identified_one_at_a_time_with_an_allowance():
    from dataclasses import replace

    from xrd_agent.config import Config
    from xrd_agent.service.pipeline import VERIFY_ALLOWANCE_S, settings_for

    on = Config()
    off = replace(on, model=replace(on.model, verify=False, batch_sizes=(1, 8, 32)))
    assert on.model.verify  # the service checks by default, as identify does
    assert (settings_for(on).max_batch, settings_for(on).allowance_s) == (1, VERIFY_ALLOWANCE_S)
    assert (settings_for(off).max_batch, settings_for(off).allowance_s) == (32, 0.0)


def _eventually(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


import numpy as np  # noqa: E402  (appended with the cosine test)


@pytest.mark.parametrize("case", ["random", "one run", "full", "empty", "edges"])
def test_cosine_scores_equal_the_straightforward_masked_computation(engine, case):
    """The engine's matrix-vector cosines (no masked copy of the library) equal cosines
    computed the plain way on the masked columns, in float64."""
    rng = np.random.default_rng(5)
    patterns = engine.library_.patterns.astype(np.float64)
    n = patterns.shape[1]
    mask = {
        "random": rng.random(n) < 0.6,
        "one run": (np.arange(n) >= 300) & (np.arange(n) < 3200),
        "full": np.ones(n, bool),
        "empty": np.zeros(n, bool),
        "edges": (np.arange(n) < 40) | (np.arange(n) >= n - 7) | (np.arange(n) == 2000),
    }[case]
    intensity = rng.random(n).astype(np.float32)
    intensity[~mask] = rng.choice([0.0, 5.0, np.inf, np.nan], size=int((~mask).sum()))  # never seen
    refs, x = patterns[:, mask], intensity[mask].astype(np.float64)
    norms = np.linalg.norm(refs, axis=1) * (np.linalg.norm(x) or 1.0)
    expected = (refs @ x) / np.where(norms > 0, norms, 1.0)
    got = engine._cosines(intensity, mask)
    assert got.shape == expected.shape and np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    if case != "empty":
        assert expected.max() > 0.1  # not a vacuous all-zero comparison
        assert list(np.argsort(-got)[:3]) == list(np.argsort(-expected)[:3])


# -- one read per file version --------------------------------------------------------------


class CountingReads:
    """The real reader, counted: how often a file was opened and parsed."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def __call__(self, path: Path) -> readers.Reading:
        self.paths.append(Path(path))
        return readers.read_file(path)


@pytest.mark.parametrize("name", ["Si-Std_SRM640d_D8D_20-97_7_16hm.brml", "TwoTheta_scan_scrambled.raw"])
def test_the_completeness_check_the_read_and_the_hash_are_one_parse(tmp_path, engine, fixtures_dir, name):
    import hashlib
    import shutil

    rig = Rig(tmp_path, engine)
    path = rig.folder / name
    shutil.copyfile(fixtures_dir / name, path)
    reads = CountingReads()
    readings = Readings(reads)
    rig.pipeline._read = readings.get
    assert readings.complete(path)  # the debouncer's question, on the dispatcher thread
    assert readings.complete(path)  # asked again at the next check: not read again
    ident = rig.run(path)[0]  # (and its alerts)
    assert ident["topic"] == messages.IDENTIFICATION
    assert ident["scan_id"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert reads.paths == [path]


def test_a_rejected_file_is_hashed_from_the_bytes_it_was_parsed_from(tmp_path, engine, fixtures_dir):
    import hashlib

    rig = Rig(tmp_path, engine)
    path = rig.folder / "cut.brml"
    path.write_bytes((fixtures_dir / "Si-Std_SRM640d_D8D_20-97_7_16hm.brml").read_bytes()[:3000])
    reads = CountingReads()
    readings = Readings(reads)
    rig.pipeline._read = readings.get
    assert not readings.complete(path)
    rejected, alert = rig.run(path)
    assert rejected["topic"] == messages.REJECTED and alert["reason"] == "unreadable"
    assert rejected["scan_id"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert reads.paths == [path]


def test_a_new_version_of_a_file_is_read_again(tmp_path, fixtures_dir):
    import shutil

    path = tmp_path / "S-1.brml"
    shutil.copyfile(fixtures_dir / "Si-Std_SRM640d_D8D_20-97_7_16hm.brml", path)
    reads = CountingReads()
    readings = Readings(reads)
    first = readings.get(path)
    st = os.lstat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # re-exported: same bytes, new mtime
    second = readings.get(path)
    assert second is not first and len(reads.paths) == 2 and second.sha256 == first.sha256
    assert readings.get(path) is second and len(reads.paths) == 2


def test_per_sample_crystallinity_thresholds_replace_the_configured_ones(tmp_path):
    from xrd_agent.crystallinity import Crystallinity
    from xrd_agent.identification import Candidate, Identification
    from xrd_agent.pattern import Coverage, GateDecision
    from xrd_agent.decide import Expectation
    from xrd_agent.decide import alerts as judge
    from xrd_agent.service.expectations import read_sidecar, sidecar_path

    ident = Identification(
        top=(Candidate(1, "DOTSOV", "HKUST-1", 0.9),), confidence=0.9, flags=frozenset({Flag.LOW_CRYSTALLINITY}),
        gate=GateDecision(False, 0.1, 1.0, 200), coverage=Coverage(5.0, 50.0, 1.0),
        crystallinity=Crystallinity(0.3, 0.02, 0.1, 1.0, 2.0, (4.0, 52.0), 4801))
    (low,) = judge(ident)
    assert low.reason == "low_crystallinity" and low.severity == "warning" and low.evidence["crystallinity"] == 0.3
    strict = judge(ident, Expectation("S", ("DOTSOV",), 5, amorphous_below=0.35))
    assert sorted(a.reason for a in strict) == ["amorphous", "expected_phase_missing"]
    assert judge(ident, Expectation("S", ("DOTSOV",), 5, amorphous_below=0.1, low_crystallinity_below=0.25)) == []
    scan = tmp_path / "S.raw"
    sidecar_path(scan).write_text('{"phases": ["HKUST-1"], "amorphous_below": 0.35}')
    exp = read_sidecar(scan, "S", 5)
    assert exp is not None and exp.amorphous_below == 0.35 and exp.low_crystallinity_below is None
    sidecar_path(scan).write_text('{"phases": ["HKUST-1"], "amorphous_below": 1.5}')
    assert read_sidecar(scan, "S", 5) is None  # out of range: ignored (logged), as any broken sidecar
