"""Machine facts and a reference timing, printed beside every benchmark figure.

A figure measured on a shared 2-core machine means little alone: the reference (a fixed
numpy matmul and a fixed pure-Python loop, timed in the same run) lets a reader scale a
figure to their own machine or see that the machine was busy at the time.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Reference:
    matmul_ms: float  # median of a 512 x 512 float64 matmul
    pyloop_ms: float  # median of sum(i * i for i in range(1_000_000))
    load_avg: tuple[float, float, float]

    def line(self) -> str:
        return (f"reference: matmul512 {self.matmul_ms:.2f} ms, pyloop1M {self.pyloop_ms:.1f} ms, "
                f"load {self.load_avg[0]:.2f}/{self.load_avg[1]:.2f}/{self.load_avg[2]:.2f}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int
    usable_cores: int
    memory_gib: float
    python: str
    numpy: str
    system: str

    def line(self) -> str:
        return (f"machine: {self.cpu}, {self.usable_cores}/{self.cores} cores, {self.memory_gib:.0f} GiB, "
                f"{self.system}, Python {self.python}, numpy {self.numpy}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return float("nan")


def machine() -> Machine:
    import numpy as np

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return Machine(_cpu_model(), os.cpu_count() or 1, usable, _memory_gib(), platform.python_version(),
                   np.__version__, f"{platform.system()} {platform.release()}")


def reference(repeats: int = 7) -> Reference:
    """Time the fixed reference work now (about a second)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.random((512, 512)), rng.random((512, 512))
    mm = []
    for _ in range(repeats * 3):
        t = time.perf_counter()
        a @ b
        mm.append(time.perf_counter() - t)
    loop = []
    for _ in range(repeats):
        t = time.perf_counter()
        sum(i * i for i in range(1_000_000))
        loop.append(time.perf_counter() - t)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return Reference(statistics.median(mm) * 1e3, statistics.median(loop) * 1e3, tuple(load))  # type: ignore[arg-type]
