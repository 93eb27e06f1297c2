"""Which file system a path is on, from a mount table; the index's NFS warning."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from dcmrecvd.settings import Settings
from dcmrecvd.store import mounts, objectstore

# Lines as proc(5) describes them: optional fields (shared:N) before the "-", escapes.
TABLE = "\n".join(
    [
        "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw",
        "30 22 0:40 / /srv/dicom rw,relatime shared:7 master:2 - nfs4 nas:/export rw,vers=4.2",
        "31 30 0:41 / /srv/dicom/local rw,relatime - xfs /dev/vdb1 rw",
        "32 22 0:42 / /mnt/my\\040share rw - nfs nas:/old rw,vers=3",
        "33 22 0:43 / /var/lib/dcmrecvd rw - ext4 /dev/vdc rw",
        # Mounted over the one above: the later line is what the path shows.
        "34 22 0:44 / /var/lib/dcmrecvd rw - nfs4 nas:/dcm rw",
        "not a mountinfo line",
        "35 22 0:45 / /broken rw -",
    ]
)


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/", "ext4"),
        ("/srv/dicom", "nfs4"),
        ("/srv/dicom/index.sqlite", "nfs4"),
        ("/srv/dicom/local/index.sqlite", "xfs"),
        ("/srv/dicomx/index.sqlite", "ext4"),  # a longer name is not inside /srv/dicom
        ("/mnt/my share/index.sqlite", "nfs"),
        ("/var/lib/dcmrecvd/.index.sqlite", "nfs4"),
        ("/broken/x", "ext4"),  # a line without a type names nothing
    ],
)
def test_the_deepest_mount_holding_the_path_gives_its_type(path: str, kind: str) -> None:
    assert mounts.filesystem_type(TABLE, path) == kind


def test_no_line_holds_the_path() -> None:
    assert mounts.filesystem_type("", "/x") is None
    assert mounts.filesystem_type("31 30 0:41 / /srv rw - xfs /dev/vdb1 rw", "/var") is None


def test_this_machines_table_agrees_with_findmnt(tmp_path: Path) -> None:
    expected = subprocess.run(
        ["findmnt", "--noheadings", "--output", "FSTYPE", "--target", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert expected
    assert mounts.filesystem_type_of(tmp_path / "index.sqlite") == expected
    # Through a symbolic link: the file system of what it points to.
    (tmp_path / "link").symlink_to(tmp_path)
    assert mounts.filesystem_type_of(tmp_path / "link" / "index.sqlite") == expected


def test_an_unreadable_table_knows_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mounts, "MOUNTINFO", tmp_path / "missing")
    assert mounts.filesystem_type_of(tmp_path) is None


def table_with(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text(
        f"22 1 0:21 / / rw - ext4 /dev/vda rw\n40 22 0:50 / {tmp_path} rw - {kind} nas:/x rw\n"
    )
    return path


@pytest.mark.parametrize(("kind", "warned"), [("nfs4", True), ("nfs", True), ("ext4", False)])
def test_an_index_on_nfs_is_warned_about_at_start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    warned: bool,
) -> None:
    monkeypatch.setattr(mounts, "MOUNTINFO", table_with(tmp_path, kind))
    index = os.path.join(tmp_path, "index.sqlite")
    with caplog.at_level(logging.WARNING, logger="dcmrecv"):
        objectstore.warn_if_index_on_nfs(Settings(output_dir=str(tmp_path), index_path=index))
        objectstore.warn_if_index_on_nfs(Settings(output_dir=str(tmp_path)))  # no index
    expected = (
        f"index {index} is on an NFS file system ({kind}), where SQLite's locking is not"
        " safe: put the index on this node's local disk"
    )
    assert caplog.messages == ([expected] if warned else [])
