"""The watcher and the debouncer, with real observers on a real folder."""

from __future__ import annotations

import os
import queue
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from xrd_agent import readers
from xrd_agent.service.debounce import Debouncer, Due, signature_format
from xrd_agent.service.watcher import FolderEvent, Watcher, choose_mode, filesystem_type
from xrd_agent.testing.formats import Measurement, brml_bytes, raw4_bytes, xy_bytes

# -- the debouncer's rules, with a hand-driven clock -------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _debouncer(clock: Clock, **kw) -> Debouncer:
    return Debouncer(settle_s=2.0, incomplete_timeout_s=30.0, is_complete=readers.is_complete,
                     classify=signature_format, clock=clock, **kw)


def _measurement(n: int = 500) -> Measurement:
    counts = np.random.default_rng(0).poisson(100, n).astype(float)
    return Measurement(start=5.0, step=0.02, counts=counts, sample_id="S-1")


def test_a_growing_raw_file_is_due_only_when_complete_and_quiet(tmp_path):
    clock = Clock()
    deb = _debouncer(clock)
    data = raw4_bytes(_measurement())
    path = tmp_path / "S-1.raw"
    path.write_bytes(data[: len(data) // 2])  # the instrument is still measuring
    deb.offer(path)
    for _ in range(5):
        assert deb.due() == []
        clock.now += 1.0  # stable for long, but the header promises more points
    assert len(deb) == 1
    with open(path, "ab") as f:
        f.write(data[len(data) // 2 :])
    assert deb.due() == []  # changed: a new quiet period starts
    clock.now += 0.3
    (due,) = deb.due()
    assert due.path == path and due.signature.size == len(data)
    assert len(deb) == 0


def test_an_aborted_measurement_is_handed_over_after_the_incomplete_timeout(tmp_path):
    clock = Clock()
    deb = _debouncer(clock)
    data = raw4_bytes(_measurement())
    path = tmp_path / "aborted.raw"
    path.write_bytes(data[:300])
    deb.offer(path)
    deb.due()
    clock.now += 29.0
    assert deb.due() == []
    clock.now += 2.0
    assert [d.path for d in deb.due()] == [path]


def test_headerless_and_unknown_files_wait_for_the_settle_time(tmp_path):
    clock = Clock()
    deb = _debouncer(clock)
    xy = tmp_path / "S-2.xy"
    xy.write_bytes(xy_bytes(_measurement()))
    junk = tmp_path / "notes.raw"
    junk.write_bytes(b"this is not a scan")
    deb.offer(xy)
    deb.offer(junk)
    deb.due()
    clock.now += 1.0
    assert deb.due() == []
    clock.now += 1.5
    assert sorted(d.path.name for d in deb.due()) == ["S-2.xy", "notes.raw"]


def test_a_vanished_file_is_forgotten(tmp_path):
    clock = Clock()
    deb = _debouncer(clock)
    path = tmp_path / "gone.brml"
    path.write_bytes(brml_bytes(_measurement()))
    deb.offer(path)
    path.unlink()
    assert deb.due() == [] and len(deb) == 0


# -- the watcher, with real observers ----------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.ready: queue.Queue[Due] = queue.Queue()
        self.folder: queue.Queue[FolderEvent] = queue.Queue()

    def take(self, timeout: float = 15.0) -> Due:
        return self.ready.get(timeout=timeout)

    def nothing_more(self, within: float = 1.0) -> bool:
        try:
            extra = self.ready.get(timeout=within)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected second delivery: {extra}")


def _watcher(folder: Path, sink: Sink, mode: str, seen: set[Path] | None = None, rescan_s: float = 1.0) -> Watcher:
    deb = Debouncer(settle_s=0.5, incomplete_timeout_s=5.0, is_complete=readers.is_complete, classify=signature_format)
    done = seen if seen is not None else set()

    def on_ready(due: Due) -> None:
        done.add(due.path)
        sink.ready.put(due)

    return Watcher(folder, debouncer=deb, on_ready=on_ready, on_folder=sink.folder.put,
                   skip=lambda due: due.path in done, mode=mode, poll_interval_s=0.2, rescan_interval_s=rescan_s)


def _write_staged(folder: Path, name: str, data: bytes, stages: int = 4) -> Path:
    """Like the instrument software: a hidden temporary name, written in stages, renamed into place."""
    tmp = folder / f".~{name}.part"
    chunk = -(-len(data) // stages)
    with open(tmp, "wb") as f:
        for i in range(0, len(data), chunk):
            f.write(data[i : i + chunk])
            f.flush()
            time.sleep(0.05)
    os.replace(tmp, folder / name)
    return folder / name


@pytest.mark.parametrize("mode", ["inotify", "polling"])
def test_a_staged_and_renamed_export_is_delivered_once(tmp_path, mode):
    sink = Sink()
    w = _watcher(tmp_path, sink, mode)
    w.start()
    try:
        path = _write_staged(tmp_path, "S-1.brml", brml_bytes(_measurement()))
        due = sink.take()
        assert due.path == path and due.signature.size == path.stat().st_size
        assert sink.nothing_more(within=2.5)  # rescans ran meanwhile: still once
    finally:
        w.stop()


def test_temporary_lock_and_sidecar_files_are_ignored(tmp_path):
    sink = Sink()
    w = _watcher(tmp_path, sink, "inotify")
    w.start()
    try:
        for name in ("~$S-1.raw", "S-1.raw.tmp", ".~lock.S-1#", "S-1.raw.expect.json", "S-1.part"):
            (tmp_path / name).write_bytes(b"x" * 100)
        real = tmp_path / "S-1.raw"
        real.write_bytes(raw4_bytes(_measurement()))
        assert sink.take().path == real
        assert sink.nothing_more(within=2.0)
    finally:
        w.stop()


def test_files_already_present_at_start_are_found_by_reconciliation(tmp_path):
    (tmp_path / "old.raw").write_bytes(raw4_bytes(_measurement()))
    sink = Sink()
    w = _watcher(tmp_path, sink, "inotify")
    w.start()
    try:
        assert sink.take().path == tmp_path / "old.raw"
    finally:
        w.stop()


def test_symlinks_are_offered_but_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.raw"
    secret.write_bytes(raw4_bytes(_measurement()))
    folder = tmp_path / "export"
    folder.mkdir()
    sink = Sink()
    w = _watcher(folder, sink, "inotify")
    w.start()
    try:
        (folder / "link.raw").symlink_to(secret)
        due = sink.take()
        assert due.path == folder / "link.raw"
        assert due.signature.size == os.lstat(folder / "link.raw").st_size  # the link, not its target
    finally:
        w.stop()


@pytest.mark.parametrize("mode", ["inotify", "polling"])
def test_a_vanished_folder_is_reported_and_watched_again_when_it_returns(tmp_path, mode):
    folder = tmp_path / "share"
    folder.mkdir()
    sink = Sink()
    w = _watcher(folder, sink, mode)
    w.start()
    try:
        away = tmp_path / "unmounted"
        folder.rename(away)
        assert sink.folder.get(timeout=10) == FolderEvent("missing", folder)
        (away / "written-meanwhile.raw").write_bytes(raw4_bytes(_measurement()))
        away.rename(folder)
        assert sink.folder.get(timeout=10) == FolderEvent("restored", folder)
        assert sink.take().path == folder / "written-meanwhile.raw"
        new = _write_staged(folder, "after.brml", brml_bytes(_measurement()))
        assert sink.take().path == new  # the observer runs again, without a restart
    finally:
        w.stop()


def test_a_folder_missing_at_start_is_reported_then_picked_up(tmp_path):
    folder = tmp_path / "not-yet"
    sink = Sink()
    w = _watcher(folder, sink, "inotify")
    w.start()
    try:
        assert sink.folder.get(timeout=5).state == "missing"
        folder.mkdir()
        assert sink.folder.get(timeout=10).state == "restored"
        path = _write_staged(folder, "S-9.raw", raw4_bytes(_measurement()))
        assert sink.take().path == path
    finally:
        w.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_mode_choice():
    assert choose_mode("polling", Path("/")) == "polling"
    assert choose_mode("auto", Path("/"), profile_prefers_polling=True) == "polling"
    assert filesystem_type(Path("/proc")) == "proc"
    assert choose_mode("auto", Path("/proc")) == "inotify"


def test_recursion_is_optional(tmp_path):
    (tmp_path / "2026-11-26").mkdir()
    nested = tmp_path / "2026-11-26" / "S-1.raw"
    top = tmp_path / "S-2.raw"
    for recursive in (False, True):
        sink = Sink()
        w = _watcher(tmp_path, sink, "inotify")
        w.recursive = recursive
        w.start()
        try:
            if not recursive:
                nested.write_bytes(raw4_bytes(_measurement()))
                top.write_bytes(raw4_bytes(_measurement()))
                assert sink.take().path == top
                assert sink.nothing_more(within=1.5)  # the sub-folder is not watched
            else:
                assert {sink.take().path, sink.take().path} == {nested, top}
        finally:
            w.stop()


def test_a_folder_replaced_between_two_checks_is_watched_afresh(tmp_path):
    folder = tmp_path / "share"
    folder.mkdir()
    sink = Sink()
    w = _watcher(folder, sink, "inotify", rescan_s=3600)  # no periodic rescan to paper over it
    w.start()
    try:
        # faster than the folder check: gone and back (a remount) before anyone noticed
        folder.rename(tmp_path / "old-mount")
        folder.mkdir()
        path = None
        deadline = time.monotonic() + 10
        while path is None and time.monotonic() < deadline:
            time.sleep(1.2)  # let the folder check see the new directory, then write into it
            path = _write_staged(folder, "S-1.raw", raw4_bytes(_measurement()))
        assert sink.take().path == path
    finally:
        w.stop()


def test_settle_times_come_from_the_profiles_and_can_be_capped():
    from xrd_agent.config import Config, merge
    from xrd_agent.service.instrument import Instrument

    plain = Instrument(Config())
    ascii_profile = plain.profile_for(Path("S-1.xy"))
    assert ascii_profile is not None and plain.settle_only(Path("S-1.xy"))
    assert plain.settle_for(Path("S-1.xy")) == ascii_profile.settle_s
    assert plain.settle_for(Path("notes.unknown")) == Config().watch.settle_s  # claimed by no profile
    assert not plain.settle_only(Path("S-1.brml"))
    capped = Instrument(merge(Config(), {"watch": {"max_settle_s": 0.5}}))
    assert capped.settle_for(Path("S-1.xy")) == 0.5


# -- the fast path: files renamed into place ---------------------------------------------------


def test_a_renamed_complete_file_is_due_at_the_first_check_without_the_quiet_period(tmp_path):
    clock = Clock()
    deb = _debouncer(clock)
    raw = tmp_path / "S-1.raw"
    raw.write_bytes(raw4_bytes(_measurement()))
    xy = tmp_path / "S-2.xy"
    xy.write_bytes(xy_bytes(_measurement()))
    deb.offer(raw, renamed=True)
    deb.offer(xy, renamed=True)  # no header to ask: the rename is the "finished" signal
    assert sorted(d.path.name for d in deb.due()) == ["S-1.raw", "S-2.xy"]
    assert len(deb) == 0


def test_files_written_in_place_keep_the_quiet_period_and_the_settle_time(tmp_path):
    clock = Clock()
    deb = _debouncer(clock)
    raw = tmp_path / "S-1.raw"
    raw.write_bytes(raw4_bytes(_measurement()))
    xy = tmp_path / "S-2.xy"
    xy.write_bytes(xy_bytes(_measurement()))
    deb.offer(raw, renamed=True)
    deb.offer(raw, renamed=False)  # written to after the rename: back to the ordinary rules
    deb.offer(xy)
    deb.offer(xy, renamed=None)  # a rescan says nothing about how it got there
    assert deb.due() == []
    clock.now += 0.3
    assert [d.path for d in deb.due()] == [raw]
    assert deb.due() == []
    clock.now += 2.0
    assert [d.path for d in deb.due()] == [xy]


def test_a_renamed_but_incomplete_scan_waits_for_the_rest_under_the_ordinary_rules(tmp_path):
    clock = Clock()
    deb = _debouncer(clock)
    data = raw4_bytes(_measurement())
    path = tmp_path / "S-1.raw"
    path.write_bytes(data[: len(data) // 2])  # renamed into place mid-measurement
    deb.offer(path, renamed=True)
    assert deb.due() == []
    with open(path, "ab") as f:
        f.write(data[len(data) // 2 :])
    assert deb.due() == []  # complete now, but not yet quiet
    clock.now += 0.3
    (due,) = deb.due()
    assert due.signature.size == len(data)


def test_a_renamed_symlink_is_not_taken_on_the_fast_path(tmp_path):
    clock = Clock()
    deb = _debouncer(clock)
    target = tmp_path / "target.raw"
    target.write_bytes(raw4_bytes(_measurement()))
    link = tmp_path / "link.raw"
    link.symlink_to(target)
    deb.offer(link, renamed=True)
    assert deb.due() == []
    clock.now += 0.3
    assert [d.path for d in deb.due()] == [link]  # then rejected by the reader, as before


def test_the_watcher_hands_over_renamed_scans_at_once_and_in_place_writes_after_the_quiet_period(tmp_path):
    """A 60 s quiet period: only the fast path can deliver within the test's lifetime."""
    sink = Sink()
    done: set[Path] = set()
    deb = Debouncer(settle_s=60.0, incomplete_timeout_s=600.0, quiet_s=60.0, is_complete=readers.is_complete,
                    classify=signature_format)

    def on_ready(due: Due) -> None:
        done.add(due.path)
        sink.ready.put(due)

    w = Watcher(tmp_path, debouncer=deb, on_ready=on_ready, skip=lambda due: due.path in done,
                mode="inotify", rescan_interval_s=1.0)
    w.start()
    try:
        in_place = tmp_path / "S-0.raw"
        in_place.write_bytes(raw4_bytes(_measurement()))
        names = {"S-1.brml": brml_bytes(_measurement()), "S-2.raw": raw4_bytes(_measurement()),
                 "S-3.xy": xy_bytes(_measurement())}
        paths = {_write_staged(tmp_path, name, data) for name, data in names.items()}
        got = {sink.take().path for _ in paths}
        assert got == paths
        assert sink.nothing_more(within=2.5)  # rescans ran: still once each, and S-0 still quiet
        assert len(deb) == 1
    finally:
        w.stop()
