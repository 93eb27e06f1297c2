"""The Storage Commitment requests in the index, from their arrival to their report's
delivery: what survives a restart.

A request is recorded before its N-ACTION is answered, so a Success answer always has a
report to follow. It stays pending until a report reached the requester (done) or it is
given up (failed); a crash anywhere in between sends it again after the restart: at
least once. Times are epoch seconds.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from dcmrecvd.commitment.model import (
    Request,
    decode_destination,
    decode_references,
    encode_destination,
    encode_references,
)
from dcmrecvd.settings import ReportDestination
from dcmrecvd.store import index

PENDING = "pending"
DONE = "done"
FAILED = "failed"
# Finished requests are kept this long (for `detail`, and for whoever reads the index).
KEEP_FINISHED = 7 * 24 * 3600.0

_COLUMNS = (
    "id, transaction_uid, received_at, calling_ae, called_ae, peer_address, peer,"
    " destination, refs, attempts"
)


@dataclass(frozen=True)
class Pending:
    """A request whose report has not been delivered yet."""

    id: int
    request: Request
    received_at: float
    calling_ae: str
    called_ae: str
    peer_address: str
    peer: str  # the [peer] rule that admitted it; "" for none
    destination: ReportDestination | None  # that rule's destination when it came
    attempts: int  # failed deliveries so far

    @property
    def fields(self) -> dict[str, str]:
        """Journal fields of every line about this request."""
        return {
            "TRANSACTION_UID": self.request.transaction_uid,
            "DICOM_CALLING_AET": self.calling_ae,
            "PEER_ADDR": self.peer_address,
            "COMMITMENT_ID": str(self.id),
        }


def _pending(row: tuple[object, ...]) -> Pending:
    (ident, transaction, received, calling, called, address, peer, destination, refs, tries) = row
    return Pending(
        id=int(str(ident)),
        request=Request(str(transaction), decode_references(str(refs))),
        received_at=float(str(received)),
        calling_ae=str(calling),
        called_ae=str(called),
        peer_address=str(address),
        peer=str(peer),
        destination=decode_destination(str(destination)),
        attempts=int(str(tries)),
    )


def record(
    listing: index.Index,
    request: Request,
    *,
    received_at: float,
    who: tuple[str, str, str],
    peer: str,
    destination: ReportDestination | None,
    due: float,
) -> Pending:
    """Keep `request` (from `who`: calling AE, called AE, address) until its report is
    delivered, first due at `due`. Raises IndexFailure."""
    calling, called, address = who

    def insert(connection: sqlite3.Connection) -> int:
        cursor = connection.execute(
            "INSERT INTO commitments (transaction_uid, received_at, calling_ae, called_ae,"
            " peer_address, peer, destination, refs, state, attempts, due, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, '')",
            (
                request.transaction_uid,
                received_at,
                calling,
                called,
                address,
                peer,
                encode_destination(destination),
                encode_references(request.references),
                PENDING,
                due,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    ident = listing.transaction(insert, write=True)
    return Pending(ident, request, received_at, calling, called, address, peer, destination, 0)


def due(listing: index.Index, now: float, limit: int) -> list[Pending]:
    """The pending requests due at `now`, the longest due first, at most `limit`."""
    rows = listing.transaction(
        lambda c: c.execute(
            f"SELECT {_COLUMNS} FROM commitments WHERE state = ? AND due <= ?"
            " ORDER BY due, id LIMIT ?",
            (PENDING, now, limit),
        ).fetchall(),
        write=False,
    )
    return [_pending(row) for row in rows]


def next_due(listing: index.Index) -> float | None:
    """When the next pending request is due; None when none is pending."""
    row = listing.transaction(
        lambda c: c.execute(
            "SELECT min(due) FROM commitments WHERE state = ?", (PENDING,)
        ).fetchone(),
        write=False,
    )
    return None if row is None or row[0] is None else float(row[0])


def _finish(listing: index.Index, ident: int, state: str, now: float, detail: str) -> None:
    listing.transaction(
        lambda c: c.execute(
            "UPDATE commitments SET state = ?, finished_at = ?, detail = ?"
            " WHERE id = ? AND state = ?",
            (state, now, detail, ident, PENDING),
        ),
        write=True,
    )


def delivered(listing: index.Index, ident: int, now: float, detail: str) -> None:
    """The report of request `ident` reached its requester."""
    _finish(listing, ident, DONE, now, detail)


def given_up(listing: index.Index, ident: int, now: float, detail: str) -> None:
    """The report of request `ident` will not be sent again."""
    _finish(listing, ident, FAILED, now, detail)


def retry(listing: index.Index, ident: int, at: float, detail: str) -> None:
    """A delivery of request `ident` failed: one more attempt counted, next due `at`."""
    listing.transaction(
        lambda c: c.execute(
            "UPDATE commitments SET attempts = attempts + 1, due = ?, detail = ?"
            " WHERE id = ? AND state = ?",
            (at, detail, ident, PENDING),
        ),
        write=True,
    )


def release(listing: index.Index, ident: int, at: float) -> None:
    """Make request `ident` due `at`, without counting an attempt (the worker's report on
    the request's own association did not go through: the other route takes over)."""
    listing.transaction(
        lambda c: c.execute(
            "UPDATE commitments SET due = ? WHERE id = ? AND state = ?", (at, ident, PENDING)
        ),
        write=True,
    )


def count_pending(listing: index.Index) -> int:
    row = listing.transaction(
        lambda c: c.execute(
            "SELECT count(*) FROM commitments WHERE state = ?", (PENDING,)
        ).fetchone(),
        write=False,
    )
    return int(row[0])


def prune(listing: index.Index, now: float) -> int:
    """Forget requests finished more than KEEP_FINISHED ago; how many."""
    cursor = listing.transaction(
        lambda c: c.execute(
            "DELETE FROM commitments WHERE state != ? AND finished_at < ?",
            (PENDING, now - KEEP_FINISHED),
        ),
        write=True,
    )
    return int(cursor.rowcount)


def state_of(listing: index.Index, ident: int) -> tuple[str, int, str] | None:
    """(state, attempts, detail) of request `ident`; None if there is no such request."""
    row = listing.transaction(
        lambda c: c.execute(
            "SELECT state, attempts, detail FROM commitments WHERE id = ?", (ident,)
        ).fetchone(),
        write=False,
    )
    return None if row is None else (str(row[0]), int(row[1]), str(row[2]))
