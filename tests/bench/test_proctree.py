"""CPU and memory of a process tree, forked children included (the CPU used is set by
the children themselves: each burns until its own CPU clock reaches a mark)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.loadbench import proctree

# A parent that starts a child burning 0.5 s of CPU, reaps it or leaves it a zombie, says
# "done", and waits for its stdin to close.
PARENT = """
import os, sys, time
pid = os.fork()
if pid == 0:
    while time.process_time() < 0.5:
        pass
    os._exit(0)
if sys.argv[1] == "reap":
    os.waitpid(pid, 0)
else:
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
print("done", flush=True)
sys.stdin.read()
"""

HOG = """
import sys
block = bytearray(64 * 1024 * 1024)
block[::4096] = b"x" * len(block[::4096])
print("done", flush=True)
sys.stdin.read()
"""


def started(code: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    assert process.stdout.readline() == "done\n"
    yield process
    process.stdin.close()
    process.wait()


@pytest.fixture(params=["reap", "zombie"])
def parent(request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[str]]:
    yield from started(PARENT, request.param)


def test_a_finished_child_counts_reaped_or_not(parent: subprocess.Popen[str]) -> None:
    user, system = proctree.tree_cpu(parent.pid)
    # 0.5 s less a few clock ticks of rounding; the parent alone uses a tenth of it.
    assert user + system >= 0.4


def test_the_tree_lists_children_after_their_parent(parent: subprocess.Popen[str]) -> None:
    found = proctree.tree(parent.pid)
    assert found[0] == parent.pid
    assert len(found) in (1, 2)  # the zombie is still listed


def test_memory_high_water_mark_is_seen() -> None:
    for process in started(HOG):
        sampler = proctree.MemorySampler(process.pid)
        sampler.sample()
        assert sampler.largest_hwm_kib >= 64 * 1024
        assert sampler.largest_sum_kib >= 64 * 1024


def test_stat_is_read_past_a_name_with_parentheses_and_spaces(tmp_path: Path) -> None:
    odd = tmp_path / "a) b (c"
    odd.symlink_to("/bin/sleep")
    process = subprocess.Popen([str(odd), "30"])
    try:
        fields = proctree.stat_fields(process.pid)
        assert fields[1] == str(os.getpid())  # the parent pid, after the state
        assert proctree.parents()[process.pid] == os.getpid()
        assert process.pid in proctree.tree(os.getpid())
    finally:
        process.kill()
        process.wait()
