"""Prometheus' promtool, which checks what the metrics endpoint serves."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support.paths import REPO

TIMEOUT = 600.0


def promtool() -> str:
    """promtool's path; installed by scripts/peers when missing and root, else a skip."""
    found = shutil.which("promtool")
    if found is not None:
        return found
    if os.geteuid() != 0:
        pytest.skip("promtool is missing: run scripts/peers (as root it runs by itself)")
    subprocess.run(
        [str(REPO / "scripts/peers")], check=True, stdin=subprocess.DEVNULL, timeout=TIMEOUT
    )
    found = shutil.which("promtool")
    assert found is not None, "scripts/peers did not install promtool"
    return found


def check_metrics(text: str) -> str:
    """What `promtool check metrics` says about `text` (nothing when it is clean)."""
    result = subprocess.run(
        [promtool(), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return f"{result.stdout}{result.stderr}" + (
        f"(exit status {result.returncode})" if result.returncode else ""
    )
