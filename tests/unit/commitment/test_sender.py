"""A report delivered on an association of its own, to a pynetdicom SCP on the loopback:
the role the receiver proposes, the requester's answers, and DICOM TLS."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.events import Event

from dcmrecvd.commitment import model, sender
from dcmrecvd.config import tls
from tests.support.commitment import SOP_CLASS, SYNTAXES
from tests.support.net import LOCALHOST, free_port
from tests.unit.config.test_tls import Pki, settings

CT = "1.2.840.10008.5.1.4.1.1.2"
REPORT = model.Report(
    "1.2.826.0.1.3680043.10.8.1",
    (model.Reference(CT, "1.2.3.1"),),
    ((model.Reference(CT, "1.2.3.2"), model.Failure.NO_SUCH_OBJECT_INSTANCE),),
)
TIMEOUTS = sender.Timeouts(connect=5, acse=5, dimse=5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    made = Pki(tmp_path_factory.mktemp("pki"))
    made.authority("ca")
    made.authority("rogue-ca")
    made.issue("server")
    made.issue("client")
    made.issue("rogue", ca="rogue-ca")
    return made


@contextmanager
def modality(
    answer: int = 0x0000, *, sop_class: str = SOP_CLASS, context: ssl.SSLContext | None = None
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """An SCP taking reports on a free port: the port, and what it took."""
    taken: list[dict[str, Any]] = []

    def take(event: Event) -> tuple[int, Dataset | None]:
        role = event.assoc.requestor.role_selection.get(UID(SOP_CLASS))
        taken.append(
            {
                "calling": event.assoc.requestor.ae_title,
                "event_type": event.request.EventTypeID,  # type: ignore[union-attr]
                "information": event.event_information,
                "role": None if role is None else (role.scu_role, role.scp_role),
            }
        )
        return answer, None

    ae = AE(ae_title="CT1")
    ae.add_supported_context(sop_class, SYNTAXES, scu_role=False, scp_role=True)
    port = free_port()
    server = ae.start_server(
        (LOCALHOST, port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, take)],
        ssl_context=context,
    )
    assert server is not None
    try:
        yield port, taken
    finally:
        server.shutdown()


def deliver(port: int, context: ssl.SSLContext | None = None) -> sender.Outcome:
    to = model.Address("CT1", LOCALHOST, port, context is not None)
    return sender.deliver(REPORT, to, aetitle="DCMRECVD", timeouts=TIMEOUTS, context=context)


def test_the_report_goes_as_the_scp_of_storage_commitment() -> None:
    with modality() as (port, taken):
        outcome = deliver(port)
    assert outcome.delivered, outcome.detail
    [report] = taken
    assert report["calling"] == "DCMRECVD"
    # PS3.4 J.3.3: SCU role 0, SCP role 1, proposed by the receiver.
    assert report["role"] == (False, True)
    assert report["event_type"] == model.SOME_FAILED
    assert report["information"].TransactionUID == REPORT.transaction_uid
    assert report["information"].FailedSOPSequence[0].FailureReason == 0x0112


def test_a_failure_answer_is_not_a_delivery() -> None:
    with modality(answer=0x0110) as (port, taken):
        outcome = deliver(port)
    assert not outcome.delivered
    assert "0x0110" in outcome.detail
    assert len(taken) == 1


def test_a_modality_that_is_down_is_not_a_delivery_and_says_why_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG):
        outcome = deliver(free_port())
    assert not outcome.delivered
    assert f"CT1@{LOCALHOST}" in outcome.detail
    # pynetdicom's own error lines are in the outcome, not in the log.
    assert "Connection refused" in outcome.detail
    assert [r for r in caplog.records if r.name.startswith("pynetdicom")] == []
    assert logging.getLogger("pynetdicom").propagate


def test_a_modality_that_refuses_the_sop_class_is_not_a_delivery() -> None:
    with modality(sop_class=CT) as (port, taken):
        outcome = deliver(port)
    assert not outcome.delivered
    # pynetdicom's requestor aborts an association without an accepted context.
    assert "aborted" in outcome.detail
    assert taken == []


def server_context(pki: Pki) -> ssl.SSLContext:
    return tls.server_context(settings(pki))


def test_over_tls_with_our_certificate_checked_by_the_modality(pki: Pki) -> None:
    ours = tls.client_context(
        settings(pki, private_key=pki.path("client.key"), certificate=pki.path("client.pem"))
    )
    assert ours.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ours.verify_mode is ssl.CERT_REQUIRED
    with modality(context=server_context(pki)) as (port, taken):
        outcome = deliver(port, ours)
    assert outcome.delivered, outcome.detail
    assert len(taken) == 1


def test_over_tls_a_certificate_nobody_trusts_is_not_a_delivery(pki: Pki) -> None:
    rogue = tls.client_context(
        settings(pki, private_key=pki.path("rogue.key"), certificate=pki.path("rogue.pem"))
    )
    with modality(context=server_context(pki)) as (port, taken):
        outcome = deliver(port, rogue)
    assert not outcome.delivered
    assert taken == []


def test_over_tls_a_modality_we_do_not_trust_is_not_a_delivery(pki: Pki) -> None:
    ours = tls.client_context(
        settings(
            pki,
            private_key=pki.path("client.key"),
            certificate=pki.path("client.pem"),
            ca_files=(pki.path("rogue-ca.pem"),),
        )
    )
    with modality(context=server_context(pki)) as (port, taken):
        outcome = deliver(port, ours)
    assert not outcome.delivered
    assert taken == []
