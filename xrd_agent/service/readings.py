"""One read per file version: the watcher's completeness check, the worker's read and a
rejection's hash all come from one opening and one parse of the file.

A :class:`~xrd_agent.readers.Reading` is kept per path while the file's (size, mtime)
still names the version it was read from; any change is a new version and is read anew.
Before this, a BRML archive was parsed up to three times (completeness on the
dispatcher thread, the worker's read, the rejection's hash): the measured cause of BRML
latency p99 of about one second (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from xrd_agent import readers
from xrd_agent.readers import Reading

#: Readings kept (least recently used dropped first): more than a burst of exports in
#: flight between the watcher and the worker, few enough that the Scans cost little memory.
CAPACITY = 256


class Readings:
    """Thread-safe cache of file versions read by :func:`xrd_agent.readers.read_file`."""

    def __init__(self, read: Callable[[Path], Reading] = readers.read_file, capacity: int = CAPACITY) -> None:
        self._read = read
        self._capacity = max(1, capacity)
        self._items: OrderedDict[Path, Reading] = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0  # how many times a file was actually opened and parsed

    def get(self, path: Path) -> Reading:
        """The reading of ``path`` as it is now: cached if its (size, mtime) is unchanged."""
        path = Path(path)
        try:
            st = os.lstat(path)
            version = (int(st.st_size), int(st.st_mtime_ns))
        except OSError:
            version = None
        if version is not None:
            with self._lock:
                found = self._items.get(path)
                if found is not None and (found.size, found.mtime_ns) == version:
                    self._items.move_to_end(path)
                    return found
        reading = self._read(path)
        self.reads += 1
        with self._lock:
            if reading.size >= 0:
                self._items[path] = reading
                self._items.move_to_end(path)
                while len(self._items) > self._capacity:
                    self._items.popitem(last=False)
            else:
                self._items.pop(path, None)
        return reading

    def complete(self, path: Path) -> bool:
        """The debouncer's question, answered from the cached reading of this version."""
        return self.get(path).complete

    def forget(self, path: Path) -> None:
        with self._lock:
            self._items.pop(Path(path), None)
