"""Read files in child processes, each with a deadline and a memory ceiling.

A reader that hangs, segfaults (xylib is C++) or balloons must not take the harness down
with it: every file is read in a worker process; a worker past its deadline is killed and
replaced, and the file is reported as a hang; a worker that dies is reported with its exit
status. ``concurrent.futures`` cannot kill a stuck worker, hence this small pool.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

#: Status of one file: the reader returned a Scan / raised a ScanError / raised anything else /
#: passed its deadline / killed its process.
SCAN, REJECTED, ERROR, HANG, DIED = "scan", "rejected", "error", "hang", "died"
FAILURES = frozenset({ERROR, HANG, DIED})

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_BYTES = 3 * 2**30


@dataclass(frozen=True)
class Outcome:
    path: str
    status: str
    code: str  # ScanError.code, the exception type, or the signal
    reason: str
    seconds: float
    complete: bool | None = None  # what readers.is_complete said (None: it raised)
    format: str | None = None
    points: int | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def read_one(path: str) -> Outcome:
    """Run ``is_complete`` and ``read_scan`` on one path and classify what happened.

    Runs inside a worker; every exception is caught and classified here, so anything but
    a ScanError shows up as an ``error`` with the last lines of its traceback.
    """
    from xrd_agent.errors import ScanError
    from xrd_agent.readers import is_complete, read_scan
    from xrd_agent.scan import Wavelength

    t0 = time.perf_counter()
    complete: bool | None
    try:
        complete = is_complete(path)
        if not isinstance(complete, bool):
            raise TypeError(f"is_complete returned {type(complete).__name__}, not bool")
    except BaseException as exc:  # noqa: BLE001 - classified, reported as a failure
        return Outcome(path, ERROR, type(exc).__name__, "is_complete raised: " + _tail(exc),
                       time.perf_counter() - t0)
    try:
        scan = read_scan(path, wavelength=Wavelength.for_anode("Cu"))
    except ScanError as exc:
        return Outcome(path, REJECTED, exc.code, exc.reason, time.perf_counter() - t0, complete)
    except BaseException as exc:  # noqa: BLE001
        return Outcome(path, ERROR, type(exc).__name__, _tail(exc), time.perf_counter() - t0, complete)
    return Outcome(path, SCAN, "", "", time.perf_counter() - t0, complete, scan.format, int(scan.two_theta.size))


def _tail(exc: BaseException) -> str:
    lines = traceback.format_exception(exc)
    return (f"{type(exc).__name__}: {exc} | " + " ".join(line.strip() for line in lines[-4:-1]))[:600]


def _worker(conn: Connection, memory_bytes: int, task: Callable[[str], Outcome]) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    except (ImportError, ValueError, OSError):
        pass
    while True:
        try:
            path = conn.recv()
        except EOFError:
            return
        if path is None:
            return
        conn.send(task(path))


class _Slot:
    def __init__(self, ctx: mp.context.BaseContext, memory_bytes: int, task: Callable[[str], Outcome]) -> None:
        self._args = (ctx, memory_bytes, task)
        self.start()

    def start(self) -> None:
        ctx, memory_bytes, task = self._args
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, memory_bytes, task), daemon=True)
        self.proc.start()
        child.close()
        self.path: str | None = None
        self.started = 0.0

    def kill(self) -> int | None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()
        return self.proc.exitcode

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(2)
        if self.proc.is_alive():
            self.kill()


def run_isolated(paths: Iterable[str | Path], *, workers: int = 2, timeout_s: float = DEFAULT_TIMEOUT_S,
                 memory_bytes: int = DEFAULT_MEMORY_BYTES, task: Callable[[str], Outcome] = read_one,
                 progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Apply ``task`` to every path in worker processes; results in input order.

    ``timeout_s`` bounds each file (the worker is killed and replaced past it);
    ``memory_bytes`` is each worker's address-space ceiling (RLIMIT_AS), so a reader that
    inflates a bomb fails with MemoryError instead of taking the machine.
    """
    todo: deque[tuple[int, str]] = deque(enumerate(os.fspath(p) for p in paths))
    results: dict[int, Outcome] = {}
    ctx = mp.get_context("spawn")
    slots = [_Slot(ctx, memory_bytes, task) for _ in range(max(1, min(workers, len(todo) or 1)))]
    index: dict[int, int] = {}
    try:
        while todo or any(s.path is not None for s in slots):
            for s in slots:
                if s.path is None and todo:
                    i, path = todo.popleft()
                    s.path, s.started, index[id(s)] = path, time.monotonic(), i
                    s.conn.send(path)
            busy = [s for s in slots if s.path is not None]
            now = time.monotonic()
            next_deadline = min(s.started + timeout_s for s in busy)
            ready = wait([s.conn for s in busy], timeout=max(0.0, next_deadline - now))
            for s in busy:
                outcome: Outcome | None = None
                if s.conn in ready:
                    try:
                        outcome = s.conn.recv()
                    except (EOFError, OSError):
                        code = s.kill()
                        outcome = Outcome(s.path or "", DIED, f"exit {code}",
                                          "the reader's process died", time.monotonic() - s.started)
                        s.start()
                elif time.monotonic() - s.started > timeout_s:
                    s.kill()
                    outcome = Outcome(s.path or "", HANG, "timeout",
                                      f"no answer within {timeout_s:g} s", time.monotonic() - s.started)
                    s.start()
                if outcome is not None:
                    results[index.pop(id(s))] = outcome
                    s.path = None
                    if progress:
                        progress(outcome)
    finally:
        for s in slots:
            s.close()
    return [results[i] for i in sorted(results)]


def summarise(outcomes: Sequence[Outcome]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in outcomes:
        out[o.status] = out.get(o.status, 0) + 1
    return out
