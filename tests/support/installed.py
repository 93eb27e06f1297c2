"""Programs of Debian packages that scripts/peers installs, for the tests that run them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import REPO


def program(path: Path, name: str) -> Path:
    """`path`, installed by scripts/peers first when missing (as root, as in CI); skips
    the test when it is missing and we are not root. `name`: the package's, for the
    message."""
    if not path.is_file():
        if os.geteuid() != 0:
            pytest.skip(f"{name} is missing and installing it needs root: run scripts/peers")
        run = subprocess.run(
            [str(REPO / "scripts" / "peers")],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, f"scripts/peers failed:\n{run.stdout}{run.stderr}"
        assert path.is_file(), f"scripts/peers did not install {path}"
    return path
