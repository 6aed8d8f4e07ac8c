"""Where the CPU went during a measurement, from /proc (Linux): per thread of a process, per process, and
what every other process on the machine took (`ForeignCpu`), so that a run beside someone else's job
can be told from a measurement and redone (`wait_idle`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def thread_cpu(pid: int) -> dict[int, float]:
    """Each thread's CPU seconds so far (user + system, from /proc; 10 ms resolution), by thread id."""
    seconds = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        seconds[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime: fields 14 and 15
    return seconds


def process_cpu(pid: int) -> float:
    """A process's CPU seconds so far, all its threads (user + system, from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ForeignCpu:
    """The CPU that processes other than these used while it was open, in cores: the machine's busy time
    (/proc/stat) less theirs. On a shared machine a run beside someone else's job is not a measurement:
    near 0 is a clean run, and a tenth of a core or more says it was disturbed."""

    def __init__(self, *pids: int):
        self.pids = (os.getpid(), *pids)
        self.start = self.read()

    def read(self) -> tuple[float, float, float]:
        ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
        return time.perf_counter(), busy, sum(process_cpu(pid) for pid in self.pids)

    def cores(self) -> float:
        (t0, busy0, own0), (t1, busy1, own1) = self.start, self.read()
        return max((busy1 - busy0) - (own1 - own0), 0.0) / (t1 - t0)


CLEAN_CORES = 0.1  # a measurement during which other processes took less than this is clean


IDLE_WAIT_S = 900  # --retries waits at most this long for an idle moment before each measurement


def wait_idle(*pids: int) -> None:
    """Until other processes than these (and this one) have taken under CLEAN_CORES for 3 s, or IDLE_WAIT_S."""
    deadline = time.monotonic() + IDLE_WAIT_S
    while time.monotonic() < deadline:
        foreign = ForeignCpu(*pids)
        time.sleep(3)
        if foreign.cores() < CLEAN_CORES:
            return


def cpu_split(pid: int, before: dict[int, float], after: dict[int, float], requests: float, texts: float):
    """(event loop CPU ms per request, other threads' CPU ms per text) between two thread_cpu readings: the
    event loop is the process's main thread (uvicorn's), the rest the model's threads and the thread pool."""
    loop = after.get(pid, 0.0) - before.get(pid, 0.0)
    others = sum(t - before.get(tid, 0.0) for tid, t in after.items() if tid != pid)
    return 1000 * loop / max(requests, 1), 1000 * others / max(texts, 1)
