"""Waiting on a condition or a child process, with a deadline instead of a sleep."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEADLINE = 10.0


def until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Wait until `condition()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)  # polling interval of the deadline loop, not synchronisation


def found(probe: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    """The first value of `probe()` that is not None or empty; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)  # polling interval of the deadline loop, not synchronisation


def ended(pid: int, timeout: float = DEADLINE) -> int:
    """The exit status of child `pid`, waited for (through a pidfd) with a deadline."""
    descriptor = os.pidfd_open(pid)
    try:
        readable, _, _ = select.select([descriptor], [], [], timeout)
    finally:
        os.close(descriptor)
    assert readable, f"process {pid} did not end within {timeout} s"
    _, code = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(code)
