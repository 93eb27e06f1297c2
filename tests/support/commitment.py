"""A modality for Storage Commitment tests, written with pynetdicom: it stores objects,
asks for commitment (N-ACTION), and takes reports (N-EVENT-REPORT) on the request's
association or, as an SCP of its own, on a new one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_EVENT_REPORT
from pynetdicom.events import Event

from tests.support.net import LOCALHOST

SOP_CLASS = "1.2.840.10008.1.20.1"
SOP_INSTANCE = "1.2.840.10008.1.20.1.1"
SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@dataclass(frozen=True)
class Received:
    """A report as the modality took it: its Event Type ID, its Event Information, and
    who sent it on which association."""

    event_type: int
    information: Dataset
    calling_ae: str
    same_association: bool

    @property
    def transaction_uid(self) -> str:
        return str(self.information.TransactionUID)

    def stored(self) -> list[tuple[str, str]]:
        return [
            (str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
            for i in self.information.get("ReferencedSOPSequence", [])
        ]

    def failed(self) -> list[tuple[str, str, int]]:
        return [
            (str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID), int(i.FailureReason))
            for i in self.information.get("FailedSOPSequence", [])
        ]


@dataclass
class Reports:
    """The reports a modality has taken, in order; `answer` is the status it answers."""

    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answer: int = 0x0000

    def handler(self, same_association: bool) -> Any:
        def take(event: Event) -> tuple[int, Dataset | None]:
            information = event.event_information
            request = cast(N_EVENT_REPORT, event.request)
            with self.lock:
                self.received.append(
                    Received(
                        int(request.EventTypeID or 0),
                        information,
                        str(event.assoc.requestor.ae_title)
                        if not same_association
                        else str(event.assoc.acceptor.ae_title),
                        same_association,
                    )
                )
            return self.answer, None

        return (evt.EVT_N_EVENT_REPORT, take)

    def of(self, transaction_uid: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.transaction_uid == transaction_uid]


def request_information(transaction_uid: str, references: list[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = Sequence(items)
    return ds


def associate(
    port: int,
    *,
    calling: str = "MODALITY",
    report_here: Reports | None = None,
    called: str = "DCMRECVD",
) -> Association:
    """An association to ask for commitment; with `report_here`, the modality takes the
    SCP role too, so that the report may come back on it, into `report_here`."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(SOP_CLASS, SYNTAXES)
    negotiation: list[Any] = []
    handlers = []
    if report_here is not None:
        negotiation.append(build_role(SOP_CLASS, scu_role=True, scp_role=True))
        handlers.append(report_here.handler(same_association=True))
    return ae.associate(
        LOCALHOST, port, ae_title=called, ext_neg=negotiation or None, evt_handlers=handlers
    )


def ask(assoc: Association, transaction_uid: str, references: list[tuple[str, str]]) -> int:
    """Send the N-ACTION; the status of its response (-1 for none)."""
    status, _ = assoc.send_n_action(
        request_information(transaction_uid, references), 1, SOP_CLASS, SOP_INSTANCE
    )
    return int(status.get("Status", -1))


@contextmanager
def report_scp(port: int, reports: Reports, aetitle: str = "MODALITY") -> Iterator[AE]:
    """The modality's SCP on `port`, taking reports on new associations into `reports`;
    it accepts the receiver's proposal to stay the SCP of Storage Commitment."""
    ae = AE(ae_title=aetitle)
    ae.add_supported_context(SOP_CLASS, SYNTAXES, scu_role=False, scp_role=True)
    server = ae.start_server(
        (LOCALHOST, port), block=False, evt_handlers=[reports.handler(same_association=False)]
    )
    assert server is not None
    try:
        yield ae
    finally:
        server.shutdown()
