"""Decide when a file the instrument is writing has become a finished scan.

The D8 software writes exports in stages (RAW grows step by step during a measurement,
BRML is zipped at the end, other tools write a temporary name and rename it). A path is
*due* when its size and mtime have stopped changing and either the reader says the file
holds everything its headers promise (``is_complete``), or — where no reader can tell
(plain text, unknown files) — the profile's settle time has passed. A recognised scan that stays incomplete (an
aborted measurement) is handed over after ``incomplete_timeout_s`` so the reader can
reject it with a reason instead of it waiting for ever.

Fast path: a file that *arrived by an atomic rename* into the folder (``offer(path,
renamed=True)``) is due at the first check, without the quiet period, when it is a regular
file, stays unchanged across the check, and either its reader says it is complete or it has
no completeness header (plain text, settle-only profiles, unrecognised files): the rename is
the writer's "finished" signal. A renamed file that fails the check (the header promises
more, or it changed meanwhile) and any file written in place (``renamed=False``) take the
quiet-period path above, unchanged.

Pure bookkeeping: the clock, ``stat`` and the completeness checks are injected, so the
rules are tested without sleeping.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xrd_agent.errors import XrdAgentError

#: A file that the reader calls complete must still be unchanged this long (seconds):
#: protects against a writer that flushes a complete header before the last bytes.
QUIET_S = 0.25

#: Formats whose files carry no header that says how long they will be.
HEADERLESS = frozenset({"text"})


@dataclass(frozen=True)
class Signature:
    """What ``lstat`` says about a file version (symlinks are not followed)."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Signature:
        return cls(int(st.st_size), int(st.st_mtime_ns))


@dataclass(frozen=True)
class Due:
    """A path that is ready to be read, as it was when it became ready."""

    path: Path
    signature: Signature
    detected_at: float  # wall-clock time (epoch s) the file was first noticed


@dataclass
class _Pending:
    signature: Signature
    since: float  # clock time the signature was first seen
    detected_at: float
    renamed: bool = False  # arrived by an atomic rename, not yet checked on the fast path


class Debouncer:
    """Tracks candidate paths until they are due; thread-safe."""

    def __init__(
        self,
        *,
        settle_s: float,
        incomplete_timeout_s: float,
        is_complete: Callable[[Path], bool],
        classify: Callable[[Path], str | None],
        settle_for: Callable[[Path], float] | None = None,
        quiet_s: float = QUIET_S,
        stat: Callable[[Path], os.stat_result] = os.lstat,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settle_s = float(settle_s)
        self.quiet_s = min(float(quiet_s), self.settle_s)
        self.incomplete_timeout_s = max(float(incomplete_timeout_s), self.settle_s)
        self._is_complete = is_complete
        self._classify = classify
        self._settle_for = settle_for
        self._stat = stat
        self._clock = clock
        self._wall = wall
        self._pending: dict[Path, _Pending] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def offer(self, path: Path, *, renamed: bool | None = None) -> None:
        """Start (or keep) tracking ``path``; a changed file restarts its quiet period on the next check.

        ``renamed``: True when the path arrived by an atomic rename (fast path), False when it
        is being written in place (created/modified: back to the quiet period, even if a rename
        came first), None when the event says nothing about writing (a rescan): no change."""
        with self._lock:
            state = self._pending.get(path)
            if state is None:
                self._pending[path] = _Pending(Signature(-1, -1), self._clock(), self._wall(), bool(renamed))
            elif renamed is not None:
                state.renamed = renamed

    def forget(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)

    def due(self) -> list[Due]:
        """Paths that are ready now; they stop being tracked."""
        with self._lock:
            items = list(self._pending.items())
        ready: list[Due] = []
        gone: list[Path] = []
        now = self._clock()
        for path, state in items:
            try:
                sig = Signature.of(self._stat(path))
            except OSError:
                gone.append(path)
                continue
            if state.renamed:
                state.renamed = False  # one try: after that, the quiet-period rules
                if self._complete_on_arrival(path, sig):
                    ready.append(Due(path, sig, state.detected_at))
                    continue
            if sig != state.signature:
                state.signature, state.since = sig, now
                continue
            if self._ready(path, now - state.since):
                ready.append(Due(path, sig, state.detected_at))
        with self._lock:
            for path in gone:
                self._pending.pop(path, None)
            for item in ready:
                self._pending.pop(item.path, None)
        return ready

    def _complete_on_arrival(self, path: Path, sig: Signature) -> bool:
        """A renamed-in regular file that needs no quiet period: complete by its header, or
        headerless (the rename says finished), and unchanged while we looked."""
        try:
            if not stat.S_ISREG(self._stat(path).st_mode):
                return False  # links and special files: the ordinary rules reject them
        except OSError:
            return False
        fmt = self._classify(path)
        if fmt is not None and fmt not in HEADERLESS and not self._is_complete(path):
            return False  # the header promises more than is there (e.g. renamed mid-measurement)
        try:
            return Signature.of(self._stat(path)) == sig  # a writer still at work: no shortcut
        except OSError:
            return False

    def _ready(self, path: Path, stable_s: float) -> bool:
        if stable_s < self.quiet_s:
            return False
        if stable_s >= self.incomplete_timeout_s:
            return True  # give up waiting: the reader will say what is wrong
        try:
            mode = self._stat(path).st_mode
        except OSError:
            return False
        if not stat.S_ISREG(mode):
            return True  # a symlink (never followed) or a FIFO/socket/device (never opened): rejected
        fmt = self._classify(path)
        if fmt is None or fmt in HEADERLESS:
            # No header promises anything (plain text, or a profile that says "settle"), or no
            # reader knows the file (junk, to be rejected): all we have is the settle time.
            settle = self._settle_for(path) if self._settle_for is not None else self.settle_s
            return stable_s >= settle
        return self._is_complete(path)


def signature_format(path: Path) -> str | None:
    """The format whose file signature ``path`` carries; None when only the extension (or
    nothing) fits: then the file is junk to reject after the settle time, not a scan to wait for."""
    from xrd_agent import readers

    try:
        module = readers.reader_for(path)
        with open(path, "rb") as f:
            head = f.read(4096)
        return str(module.FORMAT) if module.sniff(head) else None
    except (XrdAgentError, OSError, ValueError):
        return None
