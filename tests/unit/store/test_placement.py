"""dcmrecvd.store.placement: each duplicate policy's outcome on disk, and the temp file gone."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dcmrecvd.settings import DuplicatePolicy
from dcmrecvd.store import naming, placement, storage
from tests.support.fsyncs import record_directory_fsyncs

NAME = "CT.1.2.3"


def temp_with(spool: Path, data: bytes) -> storage.TempFile:
    temp = storage.TempFile(storage.Spool(spool, "node"))
    temp.write(data)
    return temp


def join(directory: str, name: str) -> str:
    return f"{directory}/{name}"


def names(*given: str) -> Callable[[], str]:
    it: Iterator[str] = iter(given)
    return lambda: next(it)


def place(
    out: Path,
    data: bytes,
    next_name: Callable[[], str],
    policy: DuplicatePolicy,
    *,
    unique: bool = False,
    extension_length: int = 0,
) -> placement.Placed:
    return placement.place(
        temp_with(storage.spool_directory(str(out)), data),
        str(out),
        next_name,
        unique=unique,
        policy=policy,
        extension_length=extension_length,
        durable=True,
        join=join,
    )


def spool_files(out: Path) -> list[str]:
    return sorted(p.name for p in storage.spool_directory(str(out)).iterdir())


@pytest.fixture
def out(tmp_path: Path) -> Path:
    storage.ensure_directory(storage.spool_directory(str(tmp_path)))
    return tmp_path


@pytest.mark.parametrize("policy", list(DuplicatePolicy))
def test_a_free_name_is_stored_under_every_policy(out: Path, policy: DuplicatePolicy) -> None:
    placed = place(out, b"new", names(NAME), policy)
    assert placed == placement.Placed(placement.Outcome.STORED, f"{out}/{NAME}")
    assert (out / NAME).read_bytes() == b"new"
    assert spool_files(out) == []


@pytest.mark.parametrize(
    ("policy", "outcome", "content"),
    [
        (DuplicatePolicy.OVERWRITE, placement.Outcome.REPLACED, b"new"),
        (DuplicatePolicy.KEEP_FIRST, placement.Outcome.KEPT_EXISTING, b"old"),
        (DuplicatePolicy.REJECT, placement.Outcome.REJECTED, b"old"),
    ],
)
def test_a_taken_name_follows_the_policy(
    out: Path, policy: DuplicatePolicy, outcome: placement.Outcome, content: bytes
) -> None:
    (out / NAME).write_bytes(b"old")
    placed = place(out, b"new", names(NAME), policy)
    assert placed == placement.Placed(outcome, f"{out}/{NAME}")
    assert (out / NAME).read_bytes() == content
    assert spool_files(out) == []


def test_keep_first_makes_the_kept_file_durable_before_its_success(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file kept may be another receiver's, linked but not yet fsynced into its
    directory when this one finds the name taken."""
    (out / NAME).write_bytes(b"old")
    synced = record_directory_fsyncs(monkeypatch)
    assert place(out, b"new", names(NAME), DuplicatePolicy.KEEP_FIRST).outcome is (
        placement.Outcome.KEPT_EXISTING
    )
    assert synced == [out]
    synced.clear()
    assert place(out, b"new", names(NAME), DuplicatePolicy.REJECT).outcome is (
        placement.Outcome.REJECTED
    )
    assert synced == []  # a failure status promises nothing


def test_keep_first_fails_when_the_kept_file_cannot_be_made_durable(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (out / NAME).write_bytes(b"old")

    def failing(directory: Path) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(storage, "fsync_directory", failing)
    with pytest.raises(placement.PlacementError) as info:
        place(out, b"new", names(NAME), DuplicatePolicy.KEEP_FIRST)
    assert (info.value.path, info.value.error.errno) == (f"{out}/{NAME}", errno.EIO)
    assert spool_files(out) == []


@pytest.mark.parametrize("policy", [DuplicatePolicy.KEEP_FIRST, DuplicatePolicy.REJECT])
def test_a_retransmitted_link_that_made_our_link_stores(
    out: Path, monkeypatch: pytest.MonkeyPatch, policy: DuplicatePolicy
) -> None:
    """NFS: LINK is not idempotent; a retransmission of one that succeeded answers EEXIST."""
    real_link = os.link

    def retransmitted(source: Path, target: Path) -> None:
        real_link(source, target)
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))

    monkeypatch.setattr(os, "link", retransmitted)
    placed = place(out, b"new", names(NAME), policy)
    assert placed == placement.Placed(placement.Outcome.STORED, f"{out}/{NAME}")
    assert (out / NAME).read_bytes() == b"new"
    assert spool_files(out) == []


def test_keep_both_stores_the_first_free_variant_before_the_extension(out: Path) -> None:
    (out / f"{NAME}.dcm").write_bytes(b"old")
    (out / f"{NAME}_1.dcm").write_bytes(b"old variant")
    placed = place(out, b"new", names(f"{NAME}.dcm"), DuplicatePolicy.KEEP_BOTH, extension_length=4)
    assert placed == placement.Placed(
        placement.Outcome.STORED_AS_VARIANT, f"{out}/{NAME}_2.dcm", clash=f"{out}/{NAME}.dcm"
    )
    assert (out / f"{NAME}_2.dcm").read_bytes() == b"new"
    assert (out / f"{NAME}.dcm").read_bytes() == b"old"
    assert spool_files(out) == []


def test_a_unique_scheme_takes_its_next_name_and_never_replaces(out: Path) -> None:
    (out / "first").write_bytes(b"old")
    placed = place(out, b"new", names("first", "second"), DuplicatePolicy.OVERWRITE, unique=True)
    assert placed == placement.Placed(placement.Outcome.STORED, f"{out}/second")
    assert (out / "first").read_bytes() == b"old"
    assert (out / "second").read_bytes() == b"new"


def test_a_unique_scheme_that_runs_out_of_names_says_so_and_cleans_up(out: Path) -> None:
    (out / "taken").write_bytes(b"old")
    with pytest.raises(naming.NamingError):
        place(out, b"new", lambda: "taken", DuplicatePolicy.OVERWRITE, unique=True)
    assert spool_files(out) == []


def test_a_failed_commit_names_the_path_and_cleans_up(out: Path) -> None:
    with pytest.raises(placement.PlacementError) as info:
        place(out, b"new", names("missing/" + NAME), DuplicatePolicy.OVERWRITE)
    assert info.value.path == f"{out}/missing/{NAME}"
    assert info.value.error.errno == errno.ENOENT
    assert spool_files(out) == []
    assert not (out / "missing").exists()


def test_variant_keeps_the_extension_last() -> None:
    assert placement.variant("CT.1.2.dcm", 4, 3) == "CT.1.2_3.dcm"
    assert placement.variant("CT.1.2", 0, 1) == "CT.1.2_1"
