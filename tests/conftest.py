"""Fixtures shared by the whole suite."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcmrecvd.profiles import Profile
from tests.support import asconfigs
from tests.support.asconfigs import STORE_CFG
from tests.support.net import free_port


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
    return asconfigs.load(tmp_path, STORE_CFG)


# The loggers that logs.setup() and the programs' main() configure.
_LOGGERS = ("", "dcmrecv", "pynetdicom", "pydicom", "cfgtest")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what logs.setup() does to the process-wide logging: levels and handlers come
    back as they were (pytest's own handlers stay)."""
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    handlers = list(logging.getLogger().handlers)
    yield
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers and not type(handler).__module__.startswith("_pytest"):
            root.addHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
