"""dcmrecvd.store.objectstore's edges that programs use without a receiver."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from dcmrecvd import nodename
from dcmrecvd.settings import Settings
from dcmrecvd.store import objectstore, storage
from tests.support import dicomgen


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
    settings = Settings(output_dir=str(tmp_path), node_name="here")
    spool = objectstore.spool(settings)
    assert spool == storage.Spool(storage.spool_directory(str(tmp_path)), "here")
    live = storage.TempFile(spool)
    dead = spool.directory / storage.temp_name("here", 99999, "0123456789abcdef")
    theirs = spool.directory / storage.temp_name("there", 99999, "0123456789abcdef")
    for path in (dead, theirs):
        path.write_bytes(b"partial")
    with caplog.at_level(logging.WARNING, logger="dcmrecv"):
        objectstore.sweep_spool(settings)
    assert sorted(p.name for p in spool.directory.iterdir()) == sorted(
        [live.path.name, theirs.name]
    )
    assert caplog.messages == [
        f"removed 1 temporary file(s) of an interrupted receiver from {spool.directory}"
    ]
    live.discard()
    caplog.clear()
    objectstore.sweep_spool(settings)
    assert caplog.messages == []


def test_the_spool_is_named_for_the_host_without_a_node_name(tmp_path: Path) -> None:
    spool = objectstore.spool(Settings(output_dir=str(tmp_path)))
    assert spool.node == nodename.from_hostname(socket.gethostname())


def test_join_path_is_dcmtks_combine_dir_and_filename() -> None:
    assert objectstore.join_path("", "CT.1") == "CT.1"
    assert objectstore.join_path("out/", "CT.1") == "out/CT.1"
    assert objectstore.join_path("/data/in", "CT.1") == "/data/in/CT.1"


def test_reconciling_the_index_leaves_out_other_nodes_objects_and_says_how_many(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    files = dicomgen.write_all([dicomgen.Spec(dicomgen.CT, f"1.2.3.6.{n}") for n in range(3)], out)
    for path in files[1:]:
        os.setxattr(path, storage.NODE_ATTRIBUTE, b"there")
    listing = tmp_path / "index.sqlite"
    settings = Settings(output_dir=str(out), index_path=str(listing), node_name="here")
    checked = objectstore.check_index(settings)
    assert (checked.added, checked.others) == ([str(files[0])], 2)
    with caplog.at_level(logging.INFO, logger="dcmrecv"):
        objectstore.reconcile_index(settings)
        objectstore.reconcile_index(settings)
    assert caplog.messages == [
        f"index {listing}: listed 1 stored object(s) it lacked, dropped 0 that are gone,"
        " left out 2 of other nodes",
        f"index {listing}: left out 2 stored object(s) of other nodes",
    ]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]
