"""The worker: ready files in, recorded and published messages out.

One thread owns the engine and the PUB socket. It takes a batch of due files from the
bounded queue (the watcher blocks when it is full: backpressure, not memory), then per
batch:

    read ─▶ prepare ─▶ predict ─▶ evidence ─▶ decide ─▶ alerts ─▶ record (one transaction) ─▶ publish ─▶ mark sent
            └──── engine.identify_many: xrd_agent.stages ────┘   (decide.alerts)

The stages between read and alerts are :class:`xrd_agent.stages.Stages`, the same ones
``xrd-agent identify`` and ``evaluate`` run; the judge of both the identification and the
alerts is :mod:`xrd_agent.decide`.

A file that cannot be read becomes ``xrd.rejected`` plus an ``unreadable`` alert and the
worker carries on. A byte-identical re-export is published as an identification whose
``duplicate_of`` is the original's seq, carrying the original's result (the model is not
asked twice). Durable notices from other threads (status changes, folder alerts) go
through the same worker, so the ledger has one writer and the socket one user.
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from xrd_agent import decide
from xrd_agent import messages
from xrd_agent.decide import Alert
from xrd_agent.errors import NotAScanFile, ScanError
from xrd_agent.readers import Reading
from xrd_agent.identification import Identification
from xrd_agent.scan import Scan
from xrd_agent.service.debounce import Due, Signature
from xrd_agent.service.expectations import ExpectationBook
from xrd_agent.service.ledger import FileKey, Ledger, Transaction, path_text

log = structlog.get_logger("xrd_agent.pipeline")

#: How long the worker waits for work before doing its periodic duties (seconds).
TICK_S = 0.1
#: Batches failing in a row (bugs, a broken disk) after which the worker gives up and the
#: daemon exits, so that systemd restarts it and someone looks at the log.
MAX_FAILURES_IN_A_ROW = 5


@dataclass(frozen=True)
class Identity:
    agent_id: str
    instrument_id: str


@dataclass
class Counters:
    scans_seen: int = 0
    identified: int = 0
    duplicates: int = 0
    rejected: int = 0
    alerts: int = 0
    published: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass(frozen=True)
class _Read:
    due: Due
    key: FileKey
    scan: Scan


@dataclass
class Settings:
    """What SIGHUP may change without restarting the worker."""

    max_batch: int = 64
    heartbeat_s: float = 5.0
    aliases: dict[str, set[str]] = field(default_factory=dict)
    #: Silence the worker may keep, beyond the watchdog's, per scan it is identifying: the
    #: physics check takes seconds per scan, and a busy worker is not a hung one.
    allowance_s: float = 0.0


def settings_for(config: Any, aliases: dict[str, set[str]] | None = None) -> Settings:
    """The worker's settings from the configuration. With the physics check on, scans are
    identified one at a time (each published as soon as it is checked, not after a batch of 64
    checks) and each may take up to ``VERIFY_ALLOWANCE_S`` before the worker counts as hung."""
    verify = bool(config.model.verify)
    return Settings(max_batch=1 if verify else max(config.model.batch_sizes or (64,)),
                    heartbeat_s=config.publish.heartbeat_s, aliases=aliases or {},
                    allowance_s=VERIFY_ALLOWANCE_S if verify else 0.0)


#: The most one physics-checked identification may take before the worker counts as hung
#: (bench_verify.py: p99 15 s on 2 shared cores; a four-phase product of large cells takes longer).
VERIFY_ALLOWANCE_S = 180.0


def _sha256_file(path: Path, limit: int = 256 * 2**20) -> str | None:
    """sha256 of a regular file's bytes; None for anything else (a FIFO would block the worker)."""
    h = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        with os.fdopen(fd, "rb") as f:
            remaining = limit
            while remaining > 0 and (chunk := f.read(min(1 << 20, remaining))):
                h.update(chunk)
                remaining -= len(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _inside(path: Path, root: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
        return True
    except ValueError:
        return False


class Pipeline:
    """The single worker thread; ``submit`` from the watcher, ``notify_*`` from anywhere."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        engine: Any,
        send: Callable[[Mapping[str, Any]], bool],
        expectations: ExpectationBook,
        identity: Identity,
        root: Path,
        read: Callable[[Path], Reading],
        wavelength_for: Callable[..., Any] = lambda path, format=None: None,
        sample_id_of: Callable[[Scan], str] = lambda s: s.sample_id or s.source_path.stem,
        queue_size: int = 256,
        settings: Settings | None = None,
    ) -> None:
        self.ledger = ledger
        self.engine = engine
        self._send = send
        self.expectations = expectations
        self.identity = identity
        self.root = Path(root).absolute()
        self._read = read
        self._wavelength_for = wavelength_for
        self._sample_id_of = sample_id_of
        self.settings = settings or Settings()
        self.queue: queue.Queue[Due] = queue.Queue(max(1, queue_size))
        self._notices: queue.SimpleQueue[Callable[[Transaction], list[dict[str, Any]]]] = queue.SimpleQueue()
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.counters = Counters()
        self.started = time.monotonic()
        self.beat = time.monotonic()  # last time the worker loop turned: the health signal
        self._in_flight = 0  # scans inside the engine now (their allowance extends the silence allowed)
        self.error: BaseException | None = None
        self.failures = 0
        self._no_permission: set[tuple[Path, Signature]] = set()
        self._stop = threading.Event()
        self._drain = True
        self._thread: threading.Thread | None = None
        self._next_heartbeat = 0.0

    # -- versions for message headers --------------------------------------------------
    @property
    def model_version(self) -> str:
        return str(getattr(self.engine, "model_version", "") or "")

    @property
    def library_version(self) -> str:
        return str(getattr(self.engine, "library_version", "") or "")

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="xrd-worker", daemon=True)
        self._thread.start()

    def stop(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop after the queue is empty (``drain``) or after the current batch."""
        self._drain = drain
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def silence_limit(self, max_silence_s: float) -> float:
        """How long the worker may be silent now: the watchdog's limit, plus the allowance of
        each scan it is identifying."""
        return max_silence_s + self._in_flight * self.settings.allowance_s

    def healthy(self, max_silence_s: float) -> bool:
        return (self.alive and self.error is None
                and time.monotonic() - self.beat < self.silence_limit(max_silence_s))

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    # -- inputs --------------------------------------------------------------------------
    def submit(self, due: Due, stopping: threading.Event | None = None) -> bool:
        """Queue a due file, waiting while the queue is full (backpressure). False if stopping."""
        while True:
            if (stopping is not None and stopping.is_set()) or (self._stop.is_set() and not self._drain):
                return False
            try:
                self.queue.put(due, timeout=0.2)
                return True
            except queue.Full:
                continue

    def notify_status(self, state: str, detail: str = "") -> None:
        def make(tx: Transaction) -> list[dict[str, Any]]:
            body = {"state": state, "detail": detail[:2000], "counters": self.counters.as_dict()}
            return [tx.build(lambda seq: self._build(messages.STATUS, seq, body))]

        self._notices.put(make)

    def notify_unreadable(self, due: Due, detail: str) -> None:
        """An ``unreadable`` alert that is not a scan outcome (the file is retried)."""
        alert = decide.alert(decide.UNREADABLE, detail=detail)

        def make(tx: Transaction) -> list[dict[str, Any]]:
            body = {"scan_id": None, "path": path_text(due.path)[:4096], "sample_id": None,
                    "written_at": messages.rfc3339(due.signature.mtime_ns / 1e9),
                    "detected_at": messages.rfc3339(due.detected_at), **self._alert_fields(alert), "result": None}
            self.counters.alerts += 1
            return [tx.build(lambda seq: self._build(messages.ALERT, seq, body))]

        self._notices.put(make)

    def notify_folder(self, state: str, directory: Path) -> None:
        reason = decide.FOLDER_MISSING if state == "missing" else decide.FOLDER_RESTORED
        detail = ("the export folder vanished (unmounted share?); watching for it to return"
                  if state == "missing" else "the export folder is back; scans written meanwhile are processed now")
        alert = decide.alert(reason, directory=path_text(directory)[:4096], detail=detail)

        def make(tx: Transaction) -> list[dict[str, Any]]:
            body = {"scan_id": None, "path": path_text(directory)[:4096], "sample_id": None, "written_at": None,
                    "detected_at": messages.rfc3339(), **self._alert_fields(alert), "result": None}
            self.counters.alerts += 1
            return [tx.build(lambda seq: self._build(messages.ALERT, seq, body))]

        self._notices.put(make)

    def notify_review(self, body: Mapping[str, Any]) -> Future[list[dict[str, Any]]]:
        """Record and publish an ``xrd.review`` (from the HTTP thread): it takes its seq in the
        worker like every durable message, so seq order and replay hold. The future resolves to
        the published message(s) once sent, or to the error that kept it from the ledger."""
        review = dict(body)

        def make(tx: Transaction) -> list[dict[str, Any]]:
            return [tx.build(lambda seq: self._build(messages.REVIEW, seq, review))]

        future: Future[list[dict[str, Any]]] = Future()
        make.future = future  # type: ignore[attr-defined]
        self._notices.put(make)
        return future

    def use_sender(self, send: Callable[[Mapping[str, Any]], bool]) -> None:
        """Publish through ``send`` from now on (call in the worker: see :meth:`call_in_worker`)."""
        self._send = send

    def use_instrument(self, wavelength_for: Callable[..., Any], sample_id_of: Callable[[Scan], str]) -> None:
        """New default wavelengths and sample-id rules (a reloaded configuration)."""
        self._wavelength_for, self._sample_id_of = wavelength_for, sample_id_of

    def call_in_worker(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the worker thread between batches (e.g. to swap the publisher)."""
        self._calls.put(fn)

    # -- the worker ----------------------------------------------------------------------
    def publish_unsent(self) -> int:
        """Send what was recorded but maybe not sent before a crash (subscribers dedupe by seq)."""
        pending = self.ledger.unsent()
        self._publish(pending)
        if pending:
            log.info("re-published unsent messages", count=len(pending), first=pending[0]["seq"])
        return len(pending)

    def _run(self) -> None:
        try:
            self.publish_unsent()
            while True:
                self.beat = time.monotonic()
                self._handle_notices()
                batch = self._take()
                if batch:
                    try:
                        self._process(batch)
                        self.failures = 0
                    except Exception:
                        # nothing of the failed scan was recorded: the next rescan offers it again
                        self.failures += 1
                        log.exception("batch failed", size=len(batch), failures_in_a_row=self.failures)
                        if self.failures >= MAX_FAILURES_IN_A_ROW:
                            raise
                self._heartbeat()
                if self._stop.is_set() and (not self._drain or self.queue.empty()):
                    break
            self._handle_notices()
        except BaseException as exc:  # noqa: BLE001 - recorded, reported by the daemon, watchdog stops
            self.error = exc
            log.exception("worker stopped by an unexpected error")

    def _take(self) -> list[Due]:
        try:
            batch = [self.queue.get(timeout=TICK_S)]
        except queue.Empty:
            return []
        while len(batch) < self.settings.max_batch:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _handle_notices(self) -> None:
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            try:
                call()
            except Exception:
                log.exception("call in the worker failed")
        self._handle_control()

    def _handle_control(self) -> None:
        """Control requests that need the ledger (expect, replay, ...), in the worker thread."""
        while True:
            try:
                make = self._notices.get_nowait()
            except queue.Empty:
                return
            future = getattr(make, "future", None)
            try:
                with self.ledger.transaction() as tx:
                    out = make(tx)
            except Exception as exc:
                if future is None:
                    raise
                future.set_exception(exc)  # a request from outside failed: nothing kept, the worker goes on
                continue
            self._publish(out)
            if future is not None:
                future.set_result(out)

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.settings.heartbeat_s
        last = self.ledger.last_seq()
        body = {"last_seq": last, "uptime_s": round(now - self.started, 3), "queue_depth": self.depth}
        try:
            self._send(self._build(messages.HEARTBEAT, last, body))
        except Exception:
            log.exception("heartbeat not sent")

    def _publish(self, out: Sequence[dict[str, Any]]) -> None:
        sent = []
        for message in out:
            try:
                if self._send(message):
                    sent.append(message["seq"])
            except Exception:  # left unsent in the ledger: re-published at the next start
                log.exception("publish failed", seq=message.get("seq"), topic=message.get("topic"))
        self.counters.published += len(sent)
        self.ledger.mark_sent(sent)

    def _build(self, topic: str, seq: int, body: Mapping[str, Any]) -> dict[str, Any]:
        return messages.build(topic, seq, body, agent_id=self.identity.agent_id,
                              instrument_id=self.identity.instrument_id, model_version=self.model_version,
                              library_version=self.library_version)

    # -- one batch -----------------------------------------------------------------------
    def _process(self, batch: list[Due]) -> None:
        # the same file version may be queued twice (inotify event and a rescan): once is enough
        batch = list({(d.path, d.signature): d for d in batch}.values())
        reads: list[_Read] = []
        for due in batch:
            self.beat = time.monotonic()
            item = self._read_one(due)
            if item is not None:
                reads.append(item)
        fresh: list[_Read] = []
        for item in reads:
            original = self.ledger.original(item.key.sha256)
            if original is not None:
                self._record_duplicate(item, original.seq, original.message)
            else:
                fresh.append(item)
        if not fresh:
            return
        self.beat = time.monotonic()
        # The expectation is looked up before identifying: its elements steer the ranking.
        expected = [self.expectations.for_scan(r.due.path, self._sample_id_of(r.scan)) for r in fresh]
        elements = [e.elements if e is not None and e.elements else None for e in expected]
        self._in_flight = len(fresh)
        try:
            results = self._identify([r.scan for r in fresh], elements if any(elements) else None)
        finally:
            self._in_flight = 0
            self.beat = time.monotonic()
        for item, result, expectation in zip(fresh, results, expected):
            self.beat = time.monotonic()
            original = self.ledger.original(item.key.sha256)  # an identical file earlier in this batch
            if original is not None:
                self._record_duplicate(item, original.seq, original.message)
            elif isinstance(result, ScanError):
                self._record_rejection(item.due, item.key, result, item.scan.sample_id)
            else:
                self._record_identification(item, result, expectation)

    def _engine_call(self, scans: list[Scan], elements: list[Any] | None) -> list[Identification | ScanError]:
        """The engine's answer for ``scans``, computed on a helper thread while this (the worker)
        thread keeps publishing heartbeats and answering control requests: the physics check
        takes seconds to a minute per scan, and a robot must neither see a silent publisher nor
        wait that long for ``status`` or ``expect``. The health beat is not refreshed here (a
        hung engine still counts as hung once its allowance is spent); SIGHUP calls wait."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["out"] = list(self.engine.identify_many(scans) if elements is None  # stand-ins take none
                                  else self.engine.identify_many(scans, elements=elements))
            except BaseException as exc:  # noqa: BLE001 - handed to the worker thread as it is
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=run, name="xrd-engine", daemon=True).start()
        while not done.wait(min(1.0, self.settings.heartbeat_s)):
            self._heartbeat()
            self._handle_control()
        if "error" in box:
            raise box["error"]
        return box["out"]

    def _identify(self, scans: list[Scan], elements: list[Any] | None = None) -> list[Identification | ScanError]:
        try:
            return self._engine_call(scans, elements)
        except Exception:
            log.exception("batch identification failed; identifying one by one", size=len(scans))
        out: list[Identification | ScanError] = []
        for n, scan in enumerate(scans):
            try:
                out.extend(self._engine_call([scan], None if elements is None else [elements[n]]))
            except Exception as exc:
                log.exception("identification failed", path=str(scan.source_path))
                out.append(ScanError(f"the identification engine failed on this scan ({type(exc).__name__}); "
                                     "see the agent's log", scan.source_path))
        return out

    def _read_one(self, due: Due) -> _Read | None:
        path = due.path
        try:
            sig = Signature.of(os.lstat(path))
        except OSError:
            return None  # gone again (moved away, deleted): nothing to do
        if sig != due.signature or self.ledger.seen(path_text(path), sig.size, sig.mtime_ns):
            return None  # changed since it became due (it will be due again), or already done
        self.counters.scans_seen += 1
        mode = os.lstat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            exc = NotAScanFile("not a regular file (a named pipe, socket or device); only scan files are read", path)
            digest = hashlib.sha256(b"special:" + os.fsencode(path)).hexdigest()
            self._record_rejection(due, FileKey(path_text(path), sig.size, sig.mtime_ns, digest), exc, None, scan_id=None)
            return None
        if path.is_symlink():
            target = os.readlink(path)
            where = "outside the export folder" if not _inside(path, self.root) else "inside the export folder"
            exc = NotAScanFile(f"a symbolic link to {target} ({where}); links are not followed, "
                               "export the scan file itself", path)
            digest = hashlib.sha256(b"symlink:" + os.fsencode(target)).hexdigest()
            self._record_rejection(due, FileKey(path_text(path), sig.size, sig.mtime_ns, digest), exc, None,
                                   scan_id=None)
            return None
        if not os.access(path, os.R_OK):
            # e.g. the export software sets permissions after writing: not an outcome (a
            # chmod does not change the mtime, so a recorded rejection would stick); say so
            # once per file version, retry at every rescan
            if (path, sig) not in self._no_permission:
                self._no_permission.add((path, sig))
                log.warning("no permission to read a scan; retrying at every rescan", path=str(path))
                self.notify_unreadable(due, "the agent has no permission to read this file; it retries "
                                            "until it can (check the export folder's permissions)")
            return None
        # The debouncer's reading of this version when it has one: one open, one parse, one hash.
        reading = self._read(path)
        digest = reading.sha256 if (reading.size, reading.mtime_ns) == (sig.size, sig.mtime_ns) else None
        try:
            fmt = reading.scan.format if reading.scan is not None else None
            scan = reading.scan_with(self._wavelength_for(path, fmt))
        except ScanError as exc:
            digest = digest or _sha256_file(path)
            key = FileKey(path_text(path), sig.size, sig.mtime_ns, digest or "")
            self._record_rejection(due, key, exc, None, scan_id=digest)
            return None
        except Exception as exc:  # a reader bug: never crash the service, never lose the file silently
            log.exception("reader failed", path=str(path))
            digest = digest or _sha256_file(path)
            err = ScanError(f"the reader failed on this file ({type(exc).__name__}); see the agent's log", path)
            self._record_rejection(due, FileKey(path_text(path), sig.size, sig.mtime_ns, digest or ""), err, None,
                                   scan_id=digest)
            return None
        try:
            after = Signature.of(os.lstat(path))
        except OSError:
            return None
        if after != sig:
            return None  # rewritten while being read: the watcher offers the new version
        return _Read(due, FileKey(path_text(path), sig.size, sig.mtime_ns, scan.sha256), scan)

    # -- recording -----------------------------------------------------------------------
    def _scan_fields(self, due: Due, key: FileKey, scan_id: str | None, sample_id: str | None) -> dict[str, Any]:
        return {
            "scan_id": scan_id,
            "path": path_text(due.path)[:4096],
            "sample_id": sample_id,
            "written_at": messages.rfc3339(key.mtime_ns / 1e9),
            "detected_at": messages.rfc3339(due.detected_at),
        }

    @staticmethod
    def _alert_fields(alert: Alert) -> dict[str, Any]:
        return {"reason": alert.reason, "severity": alert.severity, "evidence": dict(alert.evidence)}

    def _record_rejection(self, due: Due, key: FileKey, exc: ScanError, sample_id: str | None, *,
                          scan_id: str | None = "") -> None:
        if scan_id == "":
            scan_id = key.sha256 or None
        fields = self._scan_fields(due, key, scan_id, sample_id)
        reason = path_text(exc.reason or str(exc))[:2000]
        rejected = {**fields, "reason": reason, "error": exc.code}
        alert = decide.alert(decide.UNREADABLE, detail=reason)
        with self.ledger.transaction() as tx:
            first = tx.build(lambda seq: self._build(messages.REJECTED, seq, rejected))
            second = tx.build(lambda seq: self._build(
                messages.ALERT, seq, {**fields, **self._alert_fields(alert), "result": None}))
            tx.add_scan(key, "rejected", first["seq"], sample_id=sample_id)
        self.counters.rejected += 1
        self.counters.alerts += 1
        log.warning("scan rejected", path=str(due.path), error=exc.code, reason=reason, seq=first["seq"])
        self._publish([first, second])

    def _record_duplicate(self, item: _Read, original_seq: int, original: Mapping[str, Any]) -> None:
        sample_id = self._sample_id_of(item.scan)
        body = {**self._scan_fields(item.due, item.key, item.key.sha256, sample_id), "format": item.scan.format,
                "result": original["result"], "duplicate_of": original_seq}
        with self.ledger.transaction() as tx:
            msg = tx.build(lambda seq: self._build(messages.IDENTIFICATION, seq, body))
            tx.add_scan(item.key, "duplicate", msg["seq"], duplicate_of=original_seq, sample_id=sample_id)
        self.counters.duplicates += 1
        log.info("duplicate export", path=str(item.due.path), duplicate_of=original_seq, seq=msg["seq"])
        self._publish([msg])

    def _record_identification(self, item: _Read, result: Identification, expectation: Any = None) -> None:
        sample_id = self._sample_id_of(item.scan)
        found = decide.alerts(result, expectation, aliases=self.settings.aliases,  # the alerts stage
                              materials=self.expectations.materials)
        fields = self._scan_fields(item.due, item.key, item.key.sha256, sample_id)
        result_dict = result.to_dict()
        body = {**fields, "format": item.scan.format, "result": result_dict, "duplicate_of": None}
        with self.ledger.transaction() as tx:
            msg = tx.build(lambda seq: self._build(messages.IDENTIFICATION, seq, body))
            out = [msg]
            for alert in found:
                out.append(tx.build(lambda seq, a=alert: self._build(
                    messages.ALERT, seq, {**fields, **self._alert_fields(a), "result": result_dict})))
            tx.add_scan(item.key, "identified", msg["seq"], sample_id=sample_id)
        self.counters.identified += 1
        self.counters.alerts += len(found)
        top = result.top[0] if result.top else None
        log.info("identified", path=str(item.due.path), sample_id=sample_id, seq=msg["seq"],
                 top=top.name if top else None, probability=round(top.probability, 3) if top else None,
                 flags=sorted(f.value for f in result.flags), alerts=[a.reason for a in found])
        self._publish(out)
