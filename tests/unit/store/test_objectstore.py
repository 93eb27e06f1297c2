"""dcmrecvd.store.objectstore's edges that programs use without a receiver."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from dcmrecvd.store import objectstore, storage


def test_the_output_directory_check_gives_dcmtks_reasons(tmp_path: Path) -> None:
    assert objectstore.check_output_directory(str(tmp_path)) is None
    assert objectstore.check_output_directory(str(tmp_path / "missing")) == (
        "Directory does not exist"
    )
    (tmp_path / "file").write_bytes(b"")
    assert objectstore.check_output_directory(str(tmp_path / "file")) == (
        "Directory does not exist"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to any directory")
def test_a_read_only_output_directory_is_not_writable(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        assert objectstore.check_output_directory(str(tmp_path)) == "Directory is not writable"
    finally:
        tmp_path.chmod(0o700)


def test_the_spool_sweep_removes_a_killed_receivers_files_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = storage.spool_directory(str(tmp_path))
    live = storage.TempFile(spool)
    dead = spool / f"{storage.TEMP_PREFIX}0123456789abcdef{storage.TEMP_SUFFIX}"
    dead.write_bytes(b"partial")
    with caplog.at_level(logging.WARNING, logger="dcmrecv"):
        objectstore.sweep_spool(str(tmp_path))
    assert [p.name for p in spool.iterdir()] == [live.path.name]
    assert caplog.messages == [
        f"removed 1 temporary file(s) of an interrupted receiver from {spool}"
    ]
    live.discard()
    caplog.clear()
    objectstore.sweep_spool(str(tmp_path))
    assert caplog.messages == []


def test_join_path_is_dcmtks_combine_dir_and_filename() -> None:
    assert objectstore.join_path("", "CT.1") == "CT.1"
    assert objectstore.join_path("out/", "CT.1") == "out/CT.1"
    assert objectstore.join_path("/data/in", "CT.1") == "/data/in/CT.1"
