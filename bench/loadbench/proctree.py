"""A receiver's process tree from /proc: its CPU time and its memory high-water marks.

The receiver may fork (storescp --fork: one child per association, gone when the
association ends; dcmrecvd: its workers). A child's time moves to its parent's cutime
and cstime when the parent reaps it, so the tree's time is every process's
utime+stime+cutime+cstime. Every parent is read before its children: a child reaped
after its parent was read can no longer be read, and that reading is taken again, so no
child counts twice or not at all.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Times:
    """Clock ticks of one process: its own and its reaped children's."""

    utime: int
    stime: int
    cutime: int
    cstime: int


def stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat from the third (state) on; the name may hold spaces."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    return text[text.rindex(")") + 2 :].split()


def parents() -> dict[int, int]:
    """pid -> parent pid of every process."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                found[int(name)] = int(stat_fields(int(name))[1])
            except (OSError, ValueError, IndexError):
                continue  # gone between listdir and the read
    return found


def tree(root: int) -> list[int]:
    """`root` and its descendants, each after its parent (zombies included: they still
    hold their times)."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents().items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def times(pid: int) -> Times:
    fields = stat_fields(pid)
    # utime, stime, cutime, cstime are fields 14-17 of stat(5); this list starts at 3.
    return Times(*(int(fields[index]) for index in range(11, 15)))


def tree_cpu(root: int, attempts: int = 50) -> tuple[float, float]:
    """(user, system) seconds the tree of `root` has used, its reaped children's included."""
    for _ in range(attempts):
        try:
            read = [times(pid) for pid in tree(root)]
        except (OSError, ValueError, IndexError):
            continue  # a process was reaped while the tree was read
        user = sum(t.utime + t.cutime for t in read)
        system = sum(t.stime + t.cstime for t in read)
        return user / TICKS, system / TICKS
    raise RuntimeError(f"process tree of {root} kept changing while it was read")


def status_kib(pid: int, key: str) -> int:
    """A `kB` field of /proc/PID/status (VmHWM, VmRSS); 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Peak of the tree's memory while it runs: the largest VmHWM of any one process,
    and the largest sum of VmRSS over the tree (counting shared pages once per process).

    VmHWM is exact for a process read before it ends; forked children that live less
    than `interval` may be missed.
    """

    def __init__(self, root: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.largest_hwm_kib = 0
        self.largest_sum_kib = 0
        self._done = threading.Event()

    def sample(self) -> None:
        pids = tree(self.root)
        self.largest_hwm_kib = max(
            self.largest_hwm_kib, *(status_kib(pid, "VmHWM") for pid in pids)
        )
        total = sum(status_kib(pid, "VmRSS") for pid in pids)
        self.largest_sum_kib = max(self.largest_sum_kib, total)

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.sample()

    def finish(self) -> None:
        """Stop sampling and take a last sample (the receiver must still run)."""
        self._done.set()
        self.join()
        self.sample()
