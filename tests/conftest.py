"""Fixtures shared by the whole suite."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcmrecvd.apps.dcmrecv_life import load_profile
from dcmrecvd.profiles import Profile
from dcmrecvd.settings import Settings
from tests.support.streaming_peer import STORE_CFG


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def port() -> Iterator[int]:
    yield free_port()


@pytest.fixture(scope="session")
def dcmtk_dcmrecv() -> str:
    """Path of DCMTK's own dcmrecv (installed by scripts/bootstrap)."""
    path = shutil.which("dcmrecv", path="/usr/bin")
    if path is None:
        pytest.fail("DCMTK's dcmrecv is missing: run scripts/bootstrap")
    return path


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty output directory."""
    path = tmp_path / "out"
    path.mkdir()
    return path


@pytest.fixture
def profile(tmp_path: Path) -> Profile:
    """The profile Store of STORE_CFG (CT in Explicit VR Little Endian), loaded as -xf."""
    cfg = tmp_path / "store.cfg"
    cfg.write_text(STORE_CFG)
    return load_profile(Settings(config_file=cfg, profile_name="Store"))
