"""The burst workload (mixed formats, slow writers, renames, exact duplicates, junk) and the
exactly-once check that burst, crash and hostile runs share.

Every dropped file must end as exactly one outcome, in the ledger and at the subscriber:
an identification (the first file of each content), an identification with ``duplicate_of``
pointing at it (byte-identical re-exports), or a rejection (junk). Which of two identical
files counts as the original depends on processing order, so the check is per content hash:
exactly one original, every other copy a duplicate of that original's seq.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xrd_agent import messages
from xrd_agent.bench import scans as bench_scans
from xrd_agent.bench.site import OUTCOME_TOPICS, Receiver

SCAN, DUPLICATE, JUNK = "scan", "duplicate", "junk"


@dataclass
class Drop:
    name: str
    kind: str  # SCAN | DUPLICATE | JUNK
    mode: str  # "rename" | "slow"
    make: Callable[[], bytes] = field(repr=False)
    original: str | None = None
    data: bytes | None = field(default=None, repr=False)
    sha256: str = ""
    done_at: float = 0.0  # monotonic time the file was complete in the export folder

    def bytes(self) -> bytes:
        if self.data is None:
            self.data = self.make()
            self.sha256 = hashlib.sha256(self.data).hexdigest()
        return self.data


def _junk(rng: random.Random, i: int) -> tuple[str, Callable[[], bytes]]:
    choice = i % 4
    if choice == 0:
        return ".raw", lambda: b"RAW4.00\x00" + rng.randbytes(300)  # right magic, nonsense
    if choice == 1:
        return ".xy", lambda: rng.randbytes(2000)  # binary garbage with a text extension
    if choice == 2:
        return ".xy", lambda: b"5.0 nan\n5.02 inf\n5.04 1\n"  # not numbers
    return ".brml", lambda: b"PK\x03\x04" + rng.randbytes(500)  # broken zip


def plan(n: int, library: Any, *, seed: int = 0, formats: Sequence[str] = ("raw4", "brml", "xy"),
         duplicate_share: float = 0.05, junk_share: float = 0.03, slow_share: float = 0.03,
         tag: str = "burst") -> list[Drop]:
    """``n`` files to drop: mostly distinct scans in rotating formats, some exact copies of
    earlier ones under new names, some junk; a few written slowly in place."""
    rng = random.Random(seed)
    n_dup = int(n * duplicate_share)
    n_junk = int(n * junk_share)
    n_scan = max(1, n - n_dup - n_junk)
    measured = bench_scans.measurements(n_scan, library, seed=seed, tag=tag)
    drops: list[Drop] = []
    for i, m in enumerate(measured):
        fmt = formats[i % len(formats)]
        mode = "slow" if rng.random() < slow_share and fmt != "brml" else "rename"
        drops.append(Drop(f"{tag}-{i:06d}{bench_scans.FORMATS[fmt]}", SCAN, mode,
                          (lambda m=m, fmt=fmt: bench_scans.encode(m, fmt))))
    for j in range(n_dup):
        src = drops[rng.randrange(len(measured))]
        ext = Path(src.name).suffix
        drops.append(Drop(f"{tag}-copy-{j:06d}{ext}", DUPLICATE, "rename", src.bytes, original=src.name))
    for j in range(n_junk):
        ext, make = _junk(rng, j)
        drops.append(Drop(f"{tag}-junk-{j:06d}{ext}", JUNK, "rename", make))
    # Interleave, but keep every copy after its original in the drop order.
    rng.shuffle(drops)
    position = {d.name: k for k, d in enumerate(drops)}
    for k, d in enumerate(drops):
        if d.original and position[d.original] > k:
            other = position[d.original]
            drops[k], drops[other] = drops[other], drops[k]
            position[drops[k].name], position[drops[other].name] = k, other
    return drops


class Dropper:
    """Drops planned files into an export folder in bursts; slow writers run on their own
    threads so they overlap the bursts."""

    def __init__(self, folder: Path, *, burst: int = 200, pause_s: float = 1.0, slow_s: float = 2.0,
                 seed: int = 0) -> None:
        self.folder = Path(folder)
        self.burst = burst
        self.pause_s = pause_s
        self.slow_s = slow_s
        self.rng = random.Random(seed)
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="slow-writer")
        self.dropped: list[Drop] = []
        self._lock = threading.Lock()

    def _put(self, d: Drop) -> None:
        chunks = 5
        _, done = bench_scans.drop(self.folder, d.name, d.bytes(), mode=d.mode, chunks=chunks,
                                   delay_s=self.slow_s / chunks if d.mode == "slow" else 0.0)
        d.done_at = done
        with self._lock:
            self.dropped.append(d)

    def run(self, drops: Sequence[Drop], stop: threading.Event | None = None,
            between: Callable[[int], None] | None = None) -> None:
        """Drop everything in bursts; ``between(burst_index)`` runs after each burst."""
        for b, start in enumerate(range(0, len(drops), self.burst)):
            chunk = drops[start: start + self.burst]
            for d in chunk:  # encode first, then drop as fast as the disk takes it
                d.bytes()
            for d in chunk:
                if stop is not None and stop.is_set():
                    return
                if d.mode == "slow":
                    self._pool.submit(self._put, d)
                else:
                    self._put(d)
            if between:
                between(b)
            time.sleep(self.pause_s * self.rng.uniform(0.5, 1.5))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@dataclass
class Verdict:
    files: int
    identified: int = 0
    duplicates: int = 0
    rejected: int = 0
    lost: list[str] = field(default_factory=list)  # no outcome at the subscriber
    doubled: list[str] = field(default_factory=list)  # more than one outcome
    wrong: list[str] = field(default_factory=list)  # outcome of the wrong kind
    ledger_missing: list[str] = field(default_factory=list)
    ledger_doubled: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # outcomes for files never dropped
    seq_problems: list[str] = field(default_factory=list)
    client_lost: int = 0
    client_repeats: int = 0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.doubled or self.wrong or self.ledger_missing or self.ledger_doubled
                    or self.unexpected or self.seq_problems or self.client_lost or self.client_repeats)

    def lines(self) -> list[str]:
        out = [f"files {self.files}: identified {self.identified}, duplicate-of {self.duplicates}, "
               f"rejected {self.rejected}; lost {len(self.lost)}, doubled {len(self.doubled)}, "
               f"wrong kind {len(self.wrong)}; ledger missing {len(self.ledger_missing)}, ledger doubled "
               f"{len(self.ledger_doubled)}; unexpected {len(self.unexpected)}; subscriber unrecovered gaps "
               f"{self.client_lost}, repeats {self.client_repeats}; seq problems {len(self.seq_problems)}"]
        for label, items in (("lost", self.lost), ("doubled", self.doubled), ("wrong", self.wrong),
                             ("ledger missing", self.ledger_missing), ("ledger doubled", self.ledger_doubled),
                             ("unexpected", self.unexpected), ("seq", self.seq_problems)):
            if items:
                out.append(f"  {label}: {items[:8]}{' ...' if len(items) > 8 else ''}")
        return out


def verify(drops: Sequence[Drop], receiver: Receiver, ledger_scans: Sequence[dict[str, Any]],
           ledger_messages: Sequence[dict[str, Any]], *, extra_expected: dict[str, str] | None = None) -> Verdict:
    """Judge a run: ``drops`` were dropped, ``receiver`` followed the agent throughout."""
    verdict = Verdict(len(drops))
    outcomes = receiver.outcomes()
    names = {d.name for d in drops}
    by_hash: dict[str, list[tuple[Drop, dict[str, Any], int]]] = {}
    for d in drops:
        got = outcomes.get(d.name, [])
        if not got:
            verdict.lost.append(d.name)
            continue
        if len(got) > 1:
            verdict.doubled.append(d.name)
        msg = got[0].message
        if d.kind == JUNK:
            if got[0].topic != messages.REJECTED:
                verdict.wrong.append(f"{d.name}: junk got {got[0].topic}")
            else:
                verdict.rejected += 1
            continue
        if got[0].topic != messages.IDENTIFICATION:
            verdict.wrong.append(f"{d.name}: {d.kind} got {got[0].topic} ({msg.get('reason')})")
            continue
        if msg.get("scan_id") != d.sha256:
            verdict.wrong.append(f"{d.name}: scan_id is not the file's sha256")
        by_hash.setdefault(d.sha256, []).append((d, msg, got[0].seq))
    for sha, items in by_hash.items():
        originals = [(d, m, s) for d, m, s in items if m.get("duplicate_of") is None]
        if len(originals) != 1:
            verdict.wrong.append(f"{sha[:12]}: {len(originals)} originals among {[d.name for d, _, _ in items]}")
            continue
        verdict.identified += 1
        first_seq = originals[0][2]
        for d, m, _ in items:
            if m.get("duplicate_of") is None:
                continue
            if m["duplicate_of"] != first_seq:
                verdict.wrong.append(f"{d.name}: duplicate_of {m['duplicate_of']} != original seq {first_seq}")
            else:
                verdict.duplicates += 1
    expected_extra = extra_expected or {}
    for name in outcomes:
        if name not in names and name not in expected_extra:
            verdict.unexpected.append(name)
    counts: dict[str, int] = {}
    for row in ledger_scans:
        base = Path(row["path"]).name
        counts[base] = counts.get(base, 0) + 1
    verdict.ledger_missing = [n for n in names if n not in counts]
    verdict.ledger_doubled = [n for n, c in counts.items() if c > 1]
    # Sequence numbers: strictly increasing in the ledger; the subscriber holds exactly the
    # ledger's durable messages, each once.
    seqs = [int(m["seq"]) for m in ledger_messages]
    if seqs != sorted(set(seqs)):
        verdict.seq_problems.append("ledger seqs not strictly increasing")
    durable = {int(m["seq"]) for m in ledger_messages if m["topic"] in (*OUTCOME_TOPICS, messages.ALERT)}
    received = set(receiver.by_seq)
    if durable - received:
        verdict.seq_problems.append(f"{len(durable - received)} durable seqs never reached the subscriber: "
                                    f"{sorted(durable - received)[:10]}")
    if received - durable:
        verdict.seq_problems.append(f"subscriber holds seqs the ledger does not: {sorted(received - durable)[:10]}")
    arrival = [r.seq for r in receiver.items]
    if arrival != sorted(arrival):
        verdict.seq_problems.append("subscriber delivered seqs out of order")
    verdict.client_lost, verdict.client_repeats = receiver.lost, receiver.repeats
    return verdict
