"""The ledger: seq numbers, atomic outcomes, unsent messages, replay, duplicates."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from xrd_agent.service.ledger import FileKey, Ledger


def _record(ledger: Ledger, path: str, sha: str, outcome: str = "identified", extra_messages: int = 0) -> list[int]:
    with ledger.transaction() as tx:
        seqs = [tx.build(lambda seq: {"seq": seq, "topic": "xrd.identification", "path": path})["seq"]]
        for _ in range(extra_messages):
            seqs.append(tx.build(lambda seq: {"seq": seq, "topic": "xrd.alert"})["seq"])
        tx.add_scan(FileKey(path, 10, 1_000, sha), outcome, seqs[0])
    return seqs


def test_seq_strictly_increases_across_reopen(tmp_path):
    ledger = Ledger(tmp_path)
    assert _record(ledger, "/x/a.raw", "a" * 64, extra_messages=1) == [1, 2]
    ledger.close()
    again = Ledger(tmp_path)
    assert again.last_seq() == 2
    assert _record(again, "/x/b.raw", "b" * 64) == [3]


def test_failed_transaction_leaves_no_trace_and_takes_no_seq(tmp_path):
    ledger = Ledger(tmp_path)
    with pytest.raises(RuntimeError):
        with ledger.transaction() as tx:
            tx.build(lambda seq: {"seq": seq, "topic": "xrd.identification"})
            raise RuntimeError("crash between building and committing")
    assert ledger.last_seq() == 0
    assert ledger.unsent() == []
    assert not ledger.seen("/x/a.raw", 10, 1_000)
    assert _record(ledger, "/x/a.raw", "a" * 64) == [1]


def test_one_outcome_per_file_version(tmp_path):
    ledger = Ledger(tmp_path)
    _record(ledger, "/x/a.raw", "a" * 64)
    with pytest.raises(sqlite3.IntegrityError):
        _record(ledger, "/x/a.raw", "a" * 64)
    assert ledger.last_seq() == 1  # the refused second outcome took no seq


def test_unsent_until_marked_sent(tmp_path):
    ledger = Ledger(tmp_path)
    seqs = _record(ledger, "/x/a.raw", "a" * 64, extra_messages=2)
    assert [m["seq"] for m in ledger.unsent()] == seqs
    ledger.mark_sent(seqs[:2])
    ledger.close()
    assert [m["seq"] for m in Ledger(tmp_path).unsent()] == seqs[2:]


def test_original_is_the_first_identification_of_the_content(tmp_path):
    ledger = Ledger(tmp_path)
    _record(ledger, "/x/bad.raw", "c" * 64, outcome="rejected")
    first = _record(ledger, "/x/a.raw", "a" * 64)[0]
    with ledger.transaction() as tx:
        seq = tx.build(lambda s: {"seq": s, "topic": "xrd.identification"})["seq"]
        tx.add_scan(FileKey("/x/a-copy.raw", 10, 2_000, "a" * 64), "duplicate", seq, duplicate_of=first)
    original = ledger.original("a" * 64)
    assert original is not None and original.seq == first and original.path == "/x/a.raw"
    assert ledger.original("c" * 64) is None  # a rejection is no identification to point at
    assert ledger.counts() == {"identified": 1, "duplicate": 1, "rejected": 1, "messages": 3}


def test_replay_pages_in_seq_order(tmp_path):
    ledger = Ledger(tmp_path)
    for i in range(7):
        _record(ledger, f"/x/{i}.raw", f"{i:064x}")
    page, more = ledger.replay(0, limit=3)
    assert [m["seq"] for m in page] == [1, 2, 3] and more
    page, more = ledger.replay(6, limit=3)
    assert [m["seq"] for m in page] == [7] and not more


def test_replay_reads_from_another_thread_while_the_worker_writes(tmp_path):
    ledger = Ledger(tmp_path)
    seen: list[int] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(50):
                page, _ = ledger.replay(0, limit=1000)
                seqs = [m["seq"] for m in page]
                assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
                seen.append(len(seqs))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(50):
        _record(ledger, f"/x/{i}.raw", f"{i:064x}")
    t.join()
    assert not errors
    assert ledger.replay(0, 1000)[0][-1]["seq"] == 50


def test_in_memory_ledger_works_from_several_threads():
    ledger = Ledger(None)
    threads = [threading.Thread(target=_record, args=(ledger, f"/x/{i}.raw", f"{i:064x}")) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(m["seq"] for m in ledger.replay(0, 100)[0]) == list(range(1, 9))


def test_expectations_survive_a_restart(tmp_path):
    Ledger(tmp_path).set_expectation("S-1", ["HKUST-1"], 3)
    assert Ledger(tmp_path).expectations() == {"S-1": (["HKUST-1"], 3, {})}


def test_elements_and_thresholds_of_an_expectation_survive_a_restart(tmp_path):
    """An orchestrator's `expect --elements ... ` and per-sample crystallinity thresholds were
    held only in memory: after a restart the sample was judged without them."""
    from xrd_agent.service.expectations import ExpectationBook

    book = ExpectationBook({}, 5, Ledger(tmp_path))
    book.expect("S-7", ["ZIF-8"], 3, thresholds={"amorphous_below": 0.1, "low_crystallinity_below": 0.6},
                elements=["Zn", "C", "N", "H"])
    again = ExpectationBook({}, 5, Ledger(tmp_path)).for_scan(tmp_path / "S-7.xy", "S-7")
    assert again is not None
    assert (again.phases, again.top_k, again.source) == (("ZIF-8",), 3, "control")
    assert set(again.elements) == {"Zn", "C", "N", "H"}
    assert (again.amorphous_below, again.low_crystallinity_below) == (0.1, 0.6)


def test_a_ledger_from_before_expectation_extras_opens_and_keeps_its_expectations(tmp_path):
    import sqlite3

    from xrd_agent.service.ledger import FILENAME

    Ledger(tmp_path).set_expectation("S-1", ["HKUST-1"], 3)
    conn = sqlite3.connect(tmp_path / FILENAME)  # the table as the earlier schema wrote it
    conn.executescript("ALTER TABLE expectations RENAME TO old; CREATE TABLE expectations (sample_id TEXT "
                       "PRIMARY KEY, phases TEXT NOT NULL, top_k INTEGER NOT NULL, updated_at TEXT NOT NULL); "
                       "INSERT INTO expectations SELECT sample_id, phases, top_k, updated_at FROM old; DROP TABLE old;")
    conn.close()
    ledger = Ledger(tmp_path)
    assert ledger.expectations() == {"S-1": (["HKUST-1"], 3, {})}
    ledger.set_expectation("S-2", ["ZIF-8"], 5, {"elements": ["Zn"]})
    assert Ledger(tmp_path).expectations()["S-2"] == (["ZIF-8"], 5, {"elements": ["Zn"]})


def test_a_damaged_ledger_is_a_clear_error(tmp_path):
    from xrd_agent.service.ledger import FILENAME, LedgerError

    (tmp_path / FILENAME).write_bytes(b"this is not an SQLite database, it was overwritten" * 100)
    with pytest.raises(LedgerError, match="cannot be opened"):
        Ledger(tmp_path)
