"""Watch the export folder: every finished scan file comes out once per version.

Three sources feed one event queue of immutable :class:`FileEvent` values:

* watchdog's observer (inotify locally; polling for SMB/NFS shares, where inotify never
  sees writes made by other hosts),
* a reconciliation scan of the whole folder at start and every ``rescan_interval_s``
  (inotify queues overflow silently; files that arrived while the agent was down),
* a folder check: when the export folder vanishes (unmounted share) a ``missing`` folder
  event is raised, and when it returns the observer is started again and the folder
  rescanned, without a restart.

One dispatcher thread drains the queue into the :class:`~xrd_agent.service.debounce.Debouncer`
and hands due files to ``on_ready`` — which may block: that is the backpressure from the
bounded work queue. It wakes on the first queued event (and every ``TICK_S`` while files sit
in their quiet period), so a file renamed into place, which the debouncer takes on its fast
path, is handed over in the same wake-up as its event. Files the ledger already holds (same
path, size, mtime) are skipped before any byte is read.
"""

from __future__ import annotations

import fnmatch
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from xrd_agent.service.debounce import Debouncer, Due, Signature

log = structlog.get_logger("xrd_agent.watcher")

#: Names never treated as scans: temporary, lock, backup and hidden files, and sidecars.
DEFAULT_IGNORE = (
    ".*", "~*", "*~", "*.tmp", "*.temp", "*.part", "*.partial", "*.crdownload", "*.lock", "*.lck",
    "*.swp", "*.bak", "*.expect.json", "Thumbs.db", "desktop.ini",
)
#: File systems on which inotify cannot see other hosts' writes.
NETWORK_FS = frozenset({"cifs", "smb3", "smbfs", "nfs", "nfs4", "fuse.sshfs", "9p", "afs", "ceph", "fuse.rclone"})
#: How often the dispatcher looks at pending files, and the folder check runs (seconds).
TICK_S = 0.1
FOLDER_CHECK_S = 1.0
#: What each event says about how the file got there (see ``Debouncer.offer``): an atomic
#: rename into place, or writes in place; other kinds (rescan, closed, attrib) say neither.
RENAMED = {"moved": True, "created": False, "modified": False}
#: Events waiting for the dispatcher before new ones are dropped (a rescan recovers them).
EVENT_QUEUE_SIZE = 100_000


@dataclass(frozen=True)
class FileEvent:
    """Something happened to ``path``: created, modified, moved (into place), closed,
    deleted, or rescan (seen by the reconciliation scan)."""

    kind: str
    path: Path


@dataclass(frozen=True)
class FolderEvent:
    """The export folder went ``missing`` or was ``restored``."""

    state: str
    path: Path


def ignore_by_patterns(patterns: Iterable[str]) -> Callable[[Path], bool]:
    pats = tuple(patterns)
    return lambda path: any(fnmatch.fnmatch(path.name, p) for p in pats)


def filesystem_type(path: Path, mounts: str = "/proc/mounts") -> str | None:
    """The file-system type of the mount holding ``path`` (longest mount-point prefix)."""
    try:
        target = os.path.realpath(path)
        best, kind = "", None
        with open(mounts, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                point = parts[1].replace("\\040", " ")
                if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                    best, kind = point, parts[2]
        return kind
    except OSError:
        return None


def choose_mode(mode: str, directory: Path, profile_prefers_polling: bool = False) -> str:
    """``inotify`` or ``polling``: explicit config wins, then the profile, then the file system."""
    if mode in ("inotify", "polling"):
        return mode
    if profile_prefers_polling:
        return "polling"
    return "polling" if filesystem_type(directory) in NETWORK_FS else "inotify"


class _Handler(FileSystemEventHandler):
    def __init__(self, emit: Callable[[FileEvent], None]) -> None:
        self._emit = emit

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write"):
            return
        if event.event_type == "moved":
            self._emit(FileEvent("deleted", Path(os.fsdecode(event.src_path))))
            self._emit(FileEvent("moved", Path(os.fsdecode(event.dest_path))))
        else:
            self._emit(FileEvent(event.event_type, Path(os.fsdecode(event.src_path))))


class Watcher:
    """Observer + reconciliation + folder check + debouncer, delivering :class:`Due` files."""

    def __init__(
        self,
        directory: str | Path,
        *,
        debouncer: Debouncer,
        on_ready: Callable[[Due], None],
        on_folder: Callable[[FolderEvent], None] = lambda e: None,
        skip: Callable[[Due], bool] = lambda d: False,
        ignore: Callable[[Path], bool] = ignore_by_patterns(DEFAULT_IGNORE),
        mode: str = "inotify",
        recursive: bool = False,
        poll_interval_s: float = 1.0,
        rescan_interval_s: float = 30.0,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.debouncer = debouncer
        self.mode = mode
        self.recursive = recursive
        self.poll_interval_s = poll_interval_s
        self.rescan_interval_s = rescan_interval_s
        self._on_ready = on_ready
        self._on_folder = on_folder
        self._skip = skip
        self._ignore = ignore
        self._events: queue.Queue[FileEvent] = queue.Queue(EVENT_QUEUE_SIZE)
        self._stop = threading.Event()
        self._rescan_now = threading.Event()
        self._observer: BaseObserver | None = None
        self._threads: list[threading.Thread] = []
        self.present = False

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self.present = self.directory.is_dir()
        if self.present:
            self._start_observer()
        else:
            log.warning("export folder missing at start", folder=str(self.directory))
            self._on_folder(FolderEvent("missing", self.directory))
        self._rescan_now.set()  # what arrived while the agent was down
        for name, target in (("xrd-watch-folder", self._folder_loop), ("xrd-watch-dispatch", self._dispatch_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._stop_observer()
        for t in self._threads:
            t.join(timeout=10)
        self._threads.clear()

    def rescan(self) -> None:
        """Ask for a reconciliation scan now (e.g. after SIGHUP)."""
        self._rescan_now.set()

    @property
    def pending(self) -> int:
        return len(self.debouncer) + self._events.qsize()

    # -- sources -----------------------------------------------------------------------------
    def _emit(self, event: FileEvent) -> None:
        try:
            self._events.put_nowait(event)
        except queue.Full:  # the dispatcher is blocked by backpressure: a rescan recovers
            self._rescan_now.set()

    def _start_observer(self) -> None:
        observer: BaseObserver = (
            PollingObserver(timeout=self.poll_interval_s) if self.mode == "polling" else Observer()
        )
        observer.schedule(_Handler(self._emit), str(self.directory), recursive=self.recursive)
        observer.daemon = True
        try:
            observer.start()
        except FileNotFoundError:  # the folder vanished since the last check: the loop reports it
            log.warning("export folder vanished while starting to watch it", folder=str(self.directory))
            return
        except OSError as exc:  # e.g. inotify watch limit reached: polling still works
            log.warning("inotify unavailable, polling instead", error=str(exc))
            observer = PollingObserver(timeout=self.poll_interval_s)
            observer.schedule(_Handler(self._emit), str(self.directory), recursive=self.recursive)
            observer.daemon = True
            try:
                observer.start()
            except FileNotFoundError:
                log.warning("export folder vanished while starting to watch it", folder=str(self.directory))
                return
        self._observer = observer
        log.info("watching", folder=str(self.directory), mode=self.mode, recursive=self.recursive)

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            try:
                observer.stop()
                observer.join(timeout=10)
            except Exception:  # a vanished folder can make the emitter fail on the way out
                log.debug("observer stop failed", exc_info=True)

    def _files(self) -> Iterator[Path]:
        """Every regular file or symlink in the folder (symlinked folders are not entered)."""
        if not self.recursive:
            with os.scandir(self.directory) as it:
                for entry in it:
                    if entry.is_symlink() or entry.is_file(follow_symlinks=False):
                        yield Path(entry.path)
            return
        for root, dirs, files in os.walk(self.directory, followlinks=False):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                yield Path(root, name)
            for name in dirs:
                if os.path.islink(os.path.join(root, name)):
                    yield Path(root, name)

    def _reconcile(self) -> None:
        try:
            count = 0
            for path in self._files():
                self._emit(FileEvent("rescan", path))
                count += 1
            log.debug("reconciliation scan", folder=str(self.directory), files=count)
        except OSError as exc:
            log.warning("reconciliation scan failed", folder=str(self.directory), error=str(exc))

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.directory)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _folder_loop(self) -> None:
        next_rescan = time.monotonic() + self.rescan_interval_s
        watched = self._identity()
        while not self._stop.is_set():
            identity = self._identity() if self.directory.is_dir() else None
            present = identity is not None  # renamed away between the two calls: missing, not replaced
            if present and self.present and identity != watched:
                # unmounted and mounted again between two checks, or a share mounted over the
                # folder: the observer watches the old directory; watch the new one
                log.warning("export folder was replaced or (re)mounted; watching it afresh",
                            folder=str(self.directory))
                self._stop_observer()
                self._start_observer()
                self._rescan_now.set()
            watched = identity if present else watched
            if present != self.present:
                self.present = present
                if present:
                    log.warning("export folder is back", folder=str(self.directory))
                    self._stop_observer()
                    self._start_observer()
                    self._on_folder(FolderEvent("restored", self.directory))
                    self._rescan_now.set()
                else:
                    log.error("export folder vanished", folder=str(self.directory))
                    self._stop_observer()
                    self._on_folder(FolderEvent("missing", self.directory))
            now = time.monotonic()
            if present and (self._rescan_now.is_set() or now >= next_rescan):
                self._rescan_now.clear()
                self._reconcile()
                next_rescan = now + self.rescan_interval_s
            self._stop.wait(min(FOLDER_CHECK_S, self.poll_interval_s))

    # -- dispatcher ------------------------------------------------------------------------
    def _accept(self, path: Path) -> bool:
        if self._ignore(path):
            return False
        try:
            rel = path.relative_to(self.directory)
        except ValueError:
            return False
        return self.recursive or len(rel.parts) == 1

    def _known(self, path: Path) -> bool:
        """Already processed in exactly this version (one lstat and one indexed lookup): a
        rescan of a folder of thousands of old scans costs no header reads."""
        try:
            due = Due(path, Signature.of(os.lstat(path)), 0.0)
            return bool(self._skip(due))
        except OSError:
            return False
        except Exception:
            log.exception("ledger check failed", path=str(path))
            return False

    def _drain(self, limit: int = 10_000) -> list[FileEvent]:
        batch: list[FileEvent] = []
        try:
            batch.append(self._events.get(timeout=TICK_S))
            while len(batch) < limit:
                batch.append(self._events.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            for event in self._drain():
                if not self._accept(event.path):
                    continue
                if event.kind == "deleted":
                    self.debouncer.forget(event.path)
                elif not self._known(event.path):
                    self.debouncer.offer(event.path, renamed=RENAMED.get(event.kind))
            for due in self.debouncer.due():
                if self._stop.is_set():
                    return
                try:
                    if self._skip(due):
                        continue
                except Exception:
                    log.exception("ledger check failed", path=str(due.path))
                self._on_ready(due)
