"""The ledger: what was processed and what was published, in SQLite (WAL) in the state dir.

Exactly-once rests on three rules:

1. A scan's outcome (identification or rejection) and every message it causes are written
   in ONE transaction, with their ``seq`` numbers, *before* anything is published.
2. Publishing happens after the commit; each message is marked sent afterwards. On start,
   messages recorded but not marked sent are published again (subscribers dedupe by seq).
3. A file counts as processed when its (path, size, mtime, sha256) is in ``scans``; a crash
   before the commit leaves no trace, so the reconciliation scan processes it again.

The seq counter lives in ``meta`` and only ever grows, also across restarts. Each thread
gets its own connection (SQLite connections are not shared between threads), so the
control socket's replay reads while the worker writes.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xrd_agent.errors import XrdAgentError

SCHEMA_VERSION = 1
FILENAME = "ledger.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq        INTEGER PRIMARY KEY,
    topic      TEXT NOT NULL,
    message    TEXT NOT NULL,          -- the complete message as JSON
    created_at TEXT NOT NULL,
    sent       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_unsent ON messages(sent) WHERE sent = 0;
CREATE TABLE IF NOT EXISTS scans (
    id           INTEGER PRIMARY KEY,
    path         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome IN ('identified', 'duplicate', 'rejected')),
    seq          INTEGER NOT NULL REFERENCES messages(seq),
    duplicate_of INTEGER,
    sample_id    TEXT,
    recorded_at  TEXT NOT NULL,
    UNIQUE (path, size, mtime_ns, sha256)
);
CREATE INDEX IF NOT EXISTS scans_by_stat ON scans(path, size, mtime_ns);
CREATE INDEX IF NOT EXISTS scans_by_hash ON scans(sha256, outcome);
-- by_sample, the HTTP API and the review page look messages up by sample id (expression index)
CREATE INDEX IF NOT EXISTS messages_by_sample ON messages(json_extract(message, '$.sample_id'), seq);
CREATE TABLE IF NOT EXISTS expectations (
    sample_id  TEXT PRIMARY KEY,
    phases     TEXT NOT NULL,          -- JSON list
    top_k      INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    extra      TEXT NOT NULL DEFAULT '{}'  -- JSON: elements in the pot, crystallinity thresholds
);
"""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def path_text(path: str | Path) -> str:
    """A path as text that SQLite and JSON accept: bytes that are not UTF-8 (a file name
    from an old Windows share) become backslash escapes instead of a crash."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class LedgerError(XrdAgentError, RuntimeError):
    """The ledger cannot be opened or is of another schema version."""


@dataclass(frozen=True)
class FileKey:
    """What identifies one version of one file without reading it again."""

    path: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class Original:
    """The first identification of some content: what a duplicate points at."""

    seq: int
    path: str
    message: dict[str, Any]


class Transaction:
    """One atomic write: allocate seqs, add messages and the scan outcome, commit together."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.messages: list[dict[str, Any]] = []

    def next_seq(self) -> int:
        row = self._conn.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'last_seq' RETURNING value"
        ).fetchone()
        return int(row[0])

    def add_message(self, message: dict[str, Any]) -> dict[str, Any]:
        self._conn.execute(
            "INSERT INTO messages(seq, topic, message, created_at) VALUES (?, ?, ?, ?)",
            (int(message["seq"]), str(message["topic"]), json.dumps(message, separators=(",", ":")), _now()),
        )
        self.messages.append(message)
        return message

    def build(self, make: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
        """Allocate a seq, build the message with it (``make(seq)``), and add it."""
        return self.add_message(make(self.next_seq()))

    def add_scan(
        self, key: FileKey, outcome: str, seq: int, *, duplicate_of: int | None = None, sample_id: str | None = None
    ) -> None:
        self._conn.execute(
            "INSERT INTO scans(path, size, mtime_ns, sha256, outcome, seq, duplicate_of, sample_id, recorded_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key.path, key.size, key.mtime_ns, key.sha256, outcome, seq, duplicate_of, sample_id, _now()),
        )


class Ledger:
    """SQLite ledger in ``state_dir``; safe to use from several threads (one connection each)."""

    def __init__(self, state_dir: str | Path | None) -> None:
        """``state_dir=None`` keeps the ledger in memory (tests, dry runs): one shared
        connection behind a lock instead of one per thread."""
        self.state_dir = Path(state_dir) if state_dir is not None else None
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.state_dir / FILENAME if self.state_dir is not None else None
        self._local = threading.local()
        self._shared: sqlite3.Connection | None = None
        self._write_lock = threading.RLock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        try:
            conn = self._conn()
            with conn:
                conn.executescript(_SCHEMA)
                columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(expectations)")}
                if "extra" not in columns:  # a ledger written before expectations kept elements and thresholds
                    conn.execute("ALTER TABLE expectations ADD COLUMN extra TEXT NOT NULL DEFAULT '{}'")
                conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
                conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('last_seq', '0')")
                conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('created_at', ?)", (_now(),))
            version = self._meta("schema_version")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise LedgerError(f"the ledger {self.path} cannot be opened ({exc}); if the disk is fine, keep a "
                              "copy for the record and restore the last backup") from None
        if version != str(SCHEMA_VERSION):
            self.close()
            raise LedgerError(f"the ledger {self.path} has schema version {version}; this agent reads "
                              f"version {SCHEMA_VERSION}")

    # -- connections -------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self.path is None:
            if self._shared is None:
                self._shared = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                self._connections.append(self._shared)
            return self._shared
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a committed outcome survives power loss
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()
        self._shared = None

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A connection to read with; the in-memory ledger serialises it with writes."""
        if self.path is None:
            with self._write_lock:
                yield self._conn()
        else:
            yield self._conn()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._read() as conn:
            return conn.execute(sql, tuple(params)).fetchall()

    def _meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    # -- writing -----------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; on any exception nothing is kept."""
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            tx = Transaction(conn)
            try:
                yield tx
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def mark_sent(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        conn = self._conn()
        with self._write_lock:
            conn.executemany("UPDATE messages SET sent = 1 WHERE seq = ?", [(int(s),) for s in seqs])

    def set_expectation(self, sample_id: str, phases: Sequence[str], top_k: int,
                        extra: Mapping[str, Any] | None = None) -> None:
        """``extra``: the elements in the pot and the sample's crystallinity thresholds, kept so
        that a restarted agent judges the sample as the orchestrator asked."""
        conn = self._conn()
        with self._write_lock:
            conn.execute(
                "INSERT INTO expectations(sample_id, phases, top_k, updated_at, extra) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(sample_id) DO UPDATE SET phases = excluded.phases, top_k = excluded.top_k,"
                " updated_at = excluded.updated_at, extra = excluded.extra",
                (sample_id, json.dumps(list(phases)), int(top_k), _now(), json.dumps(dict(extra or {}))),
            )

    # -- reading -----------------------------------------------------------------------------
    def last_seq(self) -> int:
        return int(self._meta("last_seq") or 0)

    def seen(self, path: str, size: int, mtime_ns: int) -> bool:
        """True when this exact version of the file (by stat) already has an outcome."""
        return bool(self._query(
            "SELECT 1 FROM scans WHERE path = ? AND size = ? AND mtime_ns = ? LIMIT 1", (path, size, mtime_ns)
        ))

    def original(self, sha256: str) -> Original | None:
        """The first identification of this content, if any (for ``duplicate_of``)."""
        rows = self._query(
            "SELECT s.seq, s.path, m.message FROM scans s JOIN messages m ON m.seq = s.seq"
            " WHERE s.sha256 = ? AND s.outcome = 'identified' ORDER BY s.seq LIMIT 1",
            (sha256,),
        )
        return Original(int(rows[0][0]), str(rows[0][1]), json.loads(rows[0][2])) if rows else None

    def unsent(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in self._query("SELECT message FROM messages WHERE sent = 0 ORDER BY seq")]

    def replay(self, since_seq: int, limit: int = 1000) -> tuple[list[dict[str, Any]], bool]:
        """Stored messages with seq > ``since_seq`` in seq order, and whether more follow."""
        limit = max(1, min(int(limit), 10_000))
        rows = self._query("SELECT message FROM messages WHERE seq > ? ORDER BY seq LIMIT ?", (int(since_seq), limit + 1))
        return [json.loads(r[0]) for r in rows[:limit]], len(rows) > limit

    def by_sample(self, sample_id: str, limit: int = 100) -> tuple[list[dict[str, Any]], bool]:
        """Every stored message naming ``sample_id``, newest first, and whether older ones were left out."""
        limit = max(1, min(int(limit), 10_000))
        rows = self._query("SELECT message FROM messages WHERE json_extract(message, '$.sample_id') = ?"
                           " ORDER BY seq DESC LIMIT ?", (sample_id, limit + 1))
        return [json.loads(r[0]) for r in rows[:limit]], len(rows) > limit

    def message(self, seq: int) -> dict[str, Any] | None:
        """The stored message with this seq, or None."""
        rows = self._query("SELECT message FROM messages WHERE seq = ?", (int(seq),))
        return json.loads(rows[0][0]) if rows else None

    def recent(self, topics: Sequence[str], limit: int = 500) -> list[dict[str, Any]]:
        """The newest stored messages of ``topics``, newest first."""
        marks = ", ".join("?" for _ in topics)
        rows = self._query(f"SELECT message FROM messages WHERE topic IN ({marks}) ORDER BY seq DESC LIMIT ?",
                           (*topics, max(1, int(limit))))
        return [json.loads(r[0]) for r in rows]

    def last_scan_at(self) -> _dt.datetime | None:
        """When the newest scan outcome was recorded (None before the first)."""
        rows = self._query("SELECT recorded_at FROM scans ORDER BY id DESC LIMIT 1")
        if not rows:
            return None
        return _dt.datetime.fromisoformat(str(rows[0][0]).replace("Z", "+00:00"))

    def expectations(self) -> dict[str, tuple[list[str], int, dict[str, Any]]]:
        """sample id -> (phases, top_k, extra) of every expectation set over the control socket."""
        rows = self._query("SELECT sample_id, phases, top_k, extra FROM expectations")
        return {str(r[0]): (list(json.loads(r[1])), int(r[2]), dict(json.loads(r[3] or "{}"))) for r in rows}

    def counts(self) -> dict[str, int]:
        out = {"identified": 0, "duplicate": 0, "rejected": 0}
        out.update({str(k): int(v) for k, v in self._query("SELECT outcome, COUNT(*) FROM scans GROUP BY outcome")})
        out["messages"] = int(self._query("SELECT COUNT(*) FROM messages")[0][0])
        return out

    def scans(self) -> list[dict[str, Any]]:
        """Every recorded outcome, oldest first (for tests, the demo summary and audits)."""
        names = ("path", "size", "mtime_ns", "sha256", "outcome", "seq", "duplicate_of", "sample_id", "recorded_at")
        rows = self._query(f"SELECT {', '.join(names)} FROM scans ORDER BY id")
        return [dict(zip(names, row)) for row in rows]
