"""Each referenced instance against the index and the disk, at the moment of asking."""

from __future__ import annotations

import os
import sqlite3
from stat import S_ISREG

from pydicom.filereader import read_file_meta_info

from dcmrecvd.commitment.model import Copy, Reference, Report, Request, report, verdict
from dcmrecvd.store import index


def _present(path: str) -> bool:
    try:
        return S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _verified(path: str, reference: Reference, sop_class_uid: str) -> bool:
    """Whether the file's File Meta names the instance and the class the index lists."""
    try:
        meta = read_file_meta_info(path)
    except Exception:  # pydicom raises many types on a file that is not what it expects
        return False
    return (
        str(meta.get("MediaStorageSOPInstanceUID", "")) == reference.sop_instance_uid
        and str(meta.get("MediaStorageSOPClassUID", "")) == sop_class_uid
    )


def _listed(
    listing: index.Index, references: tuple[Reference, ...]
) -> dict[str, list[tuple[str, str]]]:
    """(path, SOP class) of every indexed object of each referenced instance UID."""

    def read(connection: sqlite3.Connection) -> dict[str, list[tuple[str, str]]]:
        found: dict[str, list[tuple[str, str]]] = {}
        for reference in references:
            uid = reference.sop_instance_uid
            if uid not in found:
                found[uid] = connection.execute(
                    "SELECT path, sop_class_uid FROM objects WHERE sop_instance_uid = ?", (uid,)
                ).fetchall()
        return found

    return listing.transaction(read, write=False)


def check(listing: index.Index, request: Request, *, verify: bool) -> Report:
    """The report on `request` as the index and the disk say now. Raises IndexFailure."""
    listed = _listed(listing, request.references)
    verdicts = {}
    for reference in request.references:
        copies = []
        for path, sop_class_uid in listed[reference.sop_instance_uid]:
            present = _present(path)
            checked = (
                _verified(path, reference, sop_class_uid)
                if verify and present and sop_class_uid == reference.sop_class_uid
                else None
            )
            copies.append(Copy(sop_class_uid, present, checked))
        verdicts[reference] = verdict(reference, copies)
    return report(request, verdicts)
