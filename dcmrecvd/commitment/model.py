"""Storage Commitment as data: the request, the verdict on each instance, the report.

No I/O. Numbers from PS3.4 J.3 (the SOP class, its well-known instance, the action and
event types, the failure reasons) and PS3.7 10.1.4 (N-ACTION statuses).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from dcmrecvd.settings import CommitmentSettings, ReportDestination

SOP_CLASS = "1.2.840.10008.1.20.1"
# The well-known SOP instance that every N-ACTION and N-EVENT-REPORT names.
SOP_INSTANCE = "1.2.840.10008.1.20.1.1"
# Action Type ID: Request Storage Commitment.
REQUEST_ACTION = 1
# Event Type IDs of the report.
ALL_STORED = 1
SOME_FAILED = 2

# N-ACTION response statuses (PS3.7 10.1.4.1.10).
SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
NO_SUCH_SOP_INSTANCE = 0x0112
INVALID_ARGUMENT_VALUE = 0x0115
NO_SUCH_ACTION = 0x0123
NOT_AUTHORIZED = 0x0124

# A report is retried after a failed delivery: the first wait, doubled each time up to this.
MAX_BACKOFF = 3600.0


class Failure(enum.IntEnum):
    """Failure Reason (0008,1197) of an instance in the Failed SOP Sequence."""

    PROCESSING_FAILURE = 0x0110  # there, but its file is not what the index says
    NO_SUCH_OBJECT_INSTANCE = 0x0112  # never stored, or no longer on disk
    CLASS_INSTANCE_CONFLICT = 0x0119  # stored under another SOP class


@dataclass(frozen=True)
class Reference:
    """One instance the requester names: its SOP class and instance UIDs."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class Request:
    """What a Request Storage Commitment N-ACTION asks."""

    transaction_uid: str
    references: tuple[Reference, ...]


class Refused(Exception):
    """An N-ACTION that is not answered with Success: its status and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"0x{self.status:04X}: {self.reason}"


def _uid(value: object) -> str | None:
    text = str(value or "").rstrip("\x00 ")
    return text if text and UID(text).is_valid else None


def parse(requested_instance: str, action_type: int | None, information: Dataset | None) -> Request:
    """The request in an N-ACTION's values; raises Refused with the status to answer."""
    if requested_instance != SOP_INSTANCE:
        raise Refused(
            NO_SUCH_SOP_INSTANCE,
            f"the Requested SOP Instance is {requested_instance}, not {SOP_INSTANCE}",
        )
    if action_type != REQUEST_ACTION:
        raise Refused(NO_SUCH_ACTION, f"Action Type ID {action_type} (only 1 is defined)")
    if information is None:
        raise Refused(INVALID_ARGUMENT_VALUE, "no Action Information, or it cannot be decoded")
    transaction = _uid(information.get("TransactionUID"))
    if transaction is None:
        raise Refused(INVALID_ARGUMENT_VALUE, "no valid Transaction UID")
    items = information.get("ReferencedSOPSequence")
    if not items:
        raise Refused(INVALID_ARGUMENT_VALUE, "an empty or missing Referenced SOP Sequence")
    references: dict[Reference, None] = {}
    for number, item in enumerate(items, 1):
        sop_class = _uid(item.get("ReferencedSOPClassUID"))
        sop_instance = _uid(item.get("ReferencedSOPInstanceUID"))
        if sop_class is None or sop_instance is None:
            raise Refused(
                INVALID_ARGUMENT_VALUE,
                f"item {number} of the Referenced SOP Sequence lacks a valid SOP class or"
                " instance UID",
            )
        references[Reference(sop_class, sop_instance)] = None  # each once, in order
    return Request(transaction, tuple(references))


@dataclass(frozen=True)
class Copy:
    """One indexed file of a referenced instance, as found at check time."""

    sop_class_uid: str  # as the index lists it
    present: bool  # a regular file at the indexed path
    # Its File Meta read again names the same SOP class and instance; None: not read.
    verified: bool | None = None


def verdict(reference: Reference, copies: Iterable[Copy]) -> Failure | None:
    """Why `reference` is not safely stored, or None if it is.

    Stored means: listed in the index (which lists only durable objects), its file
    still there, under the SOP class the requester names, and, when verified, its
    header naming the same class and instance.
    """
    there = [copy for copy in copies if copy.present]
    if not there:
        return Failure.NO_SUCH_OBJECT_INSTANCE
    same = [copy for copy in there if copy.sop_class_uid == reference.sop_class_uid]
    if not same:
        return Failure.CLASS_INSTANCE_CONFLICT
    if any(copy.verified is not False for copy in same):
        return None
    return Failure.PROCESSING_FAILURE


@dataclass(frozen=True)
class Report:
    """The N-EVENT-REPORT's content: what is stored and what is not."""

    transaction_uid: str
    stored: tuple[Reference, ...]
    failed: tuple[tuple[Reference, Failure], ...]

    @property
    def event_type(self) -> int:
        return SOME_FAILED if self.failed else ALL_STORED


def report(request: Request, verdicts: Mapping[Reference, Failure | None]) -> Report:
    """The report on `request` given the verdict on each of its references."""
    return Report(
        request.transaction_uid,
        tuple(r for r in request.references if verdicts[r] is None),
        tuple((r, failure) for r in request.references if (failure := verdicts[r]) is not None),
    )


def _item(reference: Reference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = reference.sop_class_uid
    item.ReferencedSOPInstanceUID = reference.sop_instance_uid
    return item


def event_information(made: Report, retrieve_aetitle: str) -> Dataset:
    """The Event Information of the report (PS3.4 J.3.3.1): the Transaction UID, the
    stored instances (with the AE they can be retrieved from) and the failed ones."""
    ds = Dataset()
    ds.TransactionUID = made.transaction_uid
    if made.stored:
        ds.RetrieveAETitle = retrieve_aetitle
        ds.ReferencedSOPSequence = Sequence([_item(r) for r in made.stored])
    if made.failed:
        failed = []
        for reference, failure in made.failed:
            item = _item(reference)
            item.FailureReason = int(failure)
            failed.append(item)
        ds.FailedSOPSequence = Sequence(failed)
    return ds


# --- the pending report -----------------------------------------------------------------


def encode_references(references: Iterable[Reference]) -> str:
    return json.dumps([[r.sop_class_uid, r.sop_instance_uid] for r in references])


def decode_references(text: str) -> tuple[Reference, ...]:
    return tuple(Reference(str(c), str(i)) for c, i in json.loads(text))


def encode_destination(destination: ReportDestination | None) -> str:
    if destination is None:
        return ""
    return json.dumps(
        {
            "aetitle": destination.aetitle,
            "host": destination.host,
            "port": destination.port,
            "tls": destination.tls,
        }
    )


def decode_destination(text: str) -> ReportDestination | None:
    if not text:
        return None
    fields = json.loads(text)
    return ReportDestination(
        aetitle=fields["aetitle"],
        host=str(fields["host"]),
        port=int(fields["port"]),
        tls=bool(fields["tls"]),
    )


@dataclass(frozen=True)
class Address:
    """Where a report goes on a new association."""

    aetitle: str
    host: str
    port: int
    tls: bool


def address(
    settings: CommitmentSettings, peer: str, recorded: ReportDestination | None, calling: str
) -> Address | None:
    """Where the report of a request goes: the destination the [peer] rule `peer` names
    now (a corrected address applies to reports already pending), else the one recorded
    with the request; the AE title, when not set, is the requester's calling AE title.
    None: nowhere."""
    destination = dict(settings.destinations).get(peer, recorded) if peer else recorded
    if destination is None:
        return None
    return Address(
        destination.aetitle or calling, destination.host, destination.port, destination.tls
    )


def backoff(first: float, attempts: int) -> float:
    """The wait after failed delivery number `attempts` (1, 2, ...): first, doubled each
    time, at most MAX_BACKOFF."""
    return float(min(first * 2.0 ** min(attempts - 1, 64), MAX_BACKOFF))


def next_try(
    settings: CommitmentSettings, received_at: float, attempts: int, now: float
) -> float | None:
    """When to try again after failed delivery number `attempts`; None: give up (the
    request is older than give-up-after)."""
    if now - received_at >= settings.give_up_after:
        return None
    return now + backoff(settings.retry_delay, attempts)
