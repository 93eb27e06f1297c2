"""No single DIMSE request ends an association that can go on, and the log says what
DCMTK's dcmrecv says.

Each test sends raw requests (tests/support/rawpdu.py) to an in-process receiver and then proves
that the NEXT C-STORE on the same association is still served. What dcmrecv does with
the same requests is compared side by side in test_dcmrecv_network_interop.py.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pynetdicom.dimse_primitives import C_FIND, N_SET

from dcmrecvd import logs
from dcmrecvd.logfields import AssociationFields
from dcmrecvd.pnd import dispatch, streaming
from dcmrecvd.profiles import Profile
from dcmrecvd.receiver import DIMSE_TIMEOUT, PEER_ABORTED, max_send_pdv
from dcmrecvd.settings import StorageMode
from dcmrecvd.store import objectstore
from tests.support import asconfigs, rawpdu
from tests.support.asconfigs import VERIFY_CT_CFG
from tests.support.dimse import (
    COMMAND_LAST,
    CONTEXTS,
    CT_CX,
    MR,
    MR_CX,
    STUDY_ROOT_FIND,
    VERIFICATION_CX,
    command,
    elements_of,
    number,
    request,
    store_command,
    ui,
    us,
)
from tests.support.peers import our_receiver
from tests.support.streaming_peer import body, final_files, settings, temp_files, wait_until

REFUSED = 0x0211
ABORT_LINE = "Received Association Abort Request"


@dataclass
class Session:
    """One raw association with the receiver."""

    peer: rawpdu.Peer
    out: Path

    def send(self, data: bytes) -> tuple[int, bytes] | None:
        """Send `data`; the receiver's next PDU, or None if none comes within a second."""
        assert self.peer.send(data)
        return self.peer.read_pdu(timeout=1.0)

    def store(self, uid: str, command_set: bytes | None = None, dataset_uid: str = "") -> bytes:
        """Send a C-STORE-RQ of a CT dataset; return the dataset sent."""
        dataset = rawpdu.explicit_dataset(dataset_uid or uid)
        pdus = rawpdu.p_data(rawpdu.pdv(CT_CX, COMMAND_LAST, command_set or store_command(uid)))
        assert self.peer.send(pdus + b"".join(rawpdu.dataset_pdus(CT_CX, dataset)))
        return dataset

    def next_store_is_served(self) -> None:
        """The proof: a plain C-STORE on the same association is stored, then a release."""
        dataset = self.store("1.2.3.4.99")
        answer = elements_of(self.peer.read_pdu(timeout=10.0))
        assert number(answer[0x0900]) == 0x0000
        assert body(self.out / "CT.1.2.3.4.99") == dataset
        assert self.peer.send(rawpdu.release_rq())
        released = self.peer.read_pdu()
        assert released is not None and released[0] == rawpdu.RELEASE_RP


@pytest.fixture
def cfg_profile(tmp_path: Path) -> Profile:
    return asconfigs.load(tmp_path, VERIFY_CT_CFG)


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(AssociationFields())
    return caplog


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{logs.level_letter(r.levelno)}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.INFO
    ]


@pytest.fixture
def session(cfg_profile: Profile, out: Path, port: int) -> Iterator[Session]:
    with our_receiver(cfg_profile, port, settings(port, out)):
        peer = rawpdu.Peer(port)
        try:
            assert peer.associate(rawpdu.associate_rq(CONTEXTS, called="ANY"))
            yield Session(peer, out)
        finally:
            peer.close()


# --- C-STOREs that dcmrecv stores ---------------------------------------------------------

STORED = {
    # A sender that misread a file: dcmrecv names it from its prefix table.
    "unknown SOP class": (store_command("1.2.3.4.10", e0002=ui("31")), "UNKNOWN.1.2.3.4.10"),
    "query model as SOP class": (
        store_command("1.2.3.4.11", e0002=ui(STUDY_ROOT_FIND)),
        "UNKNOWN.1.2.3.4.11",
    ),
    "class other than the context's": (store_command("1.2.3.4.12", e0002=ui(MR)), "MR.1.2.3.4.12"),
    "priority out of range": (store_command("1.2.3.4.13", e0700=us(7)), "CT.1.2.3.4.13"),
    "non-conformant instance UID": (store_command("1.02.3.x"), "CT.1.02.3.x"),
    # Beyond dcmrecv, which aborts: the UIDs come from the dataset.
    "empty instance UID": (store_command("1.2.3.4.14", e1000=b""), "CT.1.2.3.4.14"),
    "no instance UID": (store_command("1.2.3.4.15", e1000=None), "CT.1.2.3.4.15"),
    "no class UID": (store_command("1.2.3.4.16", e0002=None), "CT.1.2.3.4.16"),
}


@pytest.mark.parametrize("case", STORED)
def test_c_stores_dcmrecv_stores_are_stored_and_the_association_goes_on(
    session: Session, log: pytest.LogCaptureFixture, case: str
) -> None:
    command_set, name = STORED[case]
    uid = name.split(".", 1)[1]
    dataset = session.store(uid, command_set)
    answer = elements_of(session.peer.read_pdu(timeout=10.0))
    assert number(answer[0x0100]) == 0x8001
    assert number(answer[0x0900]) == 0x0000
    assert body(session.out / name) == dataset
    session.next_store_is_served()
    assert not any(line.startswith("E:") for line in lines(log))


def test_a_request_without_its_uids_is_answered_with_the_datasets(session: Session) -> None:
    # The response names the class and instance it answers (PS3.7 9.3.1.2): the
    # dataset's, read by the store, where the command has none.
    session.store("1.2.3.4.19", store_command("1.2.3.4.19", e0002=None, e1000=None))
    answer = elements_of(session.peer.read_pdu(timeout=10.0))
    assert number(answer[0x0900]) == 0x0000
    assert (answer[0x0002], answer[0x1000]) == (b"1.2.840.10008.5.1.4.1.1.2\0", b"1.2.3.4.19")
    session.next_store_is_served()


def test_without_any_instance_uid_bit_preserving_answers_c000_and_goes_on(
    cfg_profile: Profile, out: Path, port: int
) -> None:
    # +B names from the command alone; dcmrecv +B aborts when it cannot name a file.
    with our_receiver(cfg_profile, port, settings(port, out, storage=StorageMode.BIT_PRESERVING)):
        peer = rawpdu.Peer(port)
        assert peer.associate(rawpdu.associate_rq(CONTEXTS, called="ANY"))
        session = Session(peer, out)
        session.store("1.2.3.4.17", store_command("1.2.3.4.17", e1000=None))
        answer = elements_of(peer.read_pdu(timeout=10.0))
        assert number(answer[0x0900]) == objectstore.CANNOT_UNDERSTAND
        session.next_store_is_served()
        peer.close()
    assert final_files(out) == ["CT.1.2.3.4.99"]
    assert temp_files(out) == []


def test_a_c_store_without_dataset_is_answered_and_the_association_goes_on(
    session: Session,
) -> None:
    no_dataset = store_command("1.2.3.4.18", e0800=us(rawpdu.NO_DATASET))
    answer = elements_of(session.send(rawpdu.p_data(rawpdu.pdv(CT_CX, COMMAND_LAST, no_dataset))))
    assert number(answer[0x0100]) == 0x8001
    assert number(answer[0x0900]) == objectstore.CANNOT_UNDERSTAND
    session.next_store_is_served()


# --- requests a storage SCP does not serve -------------------------------------------------

REFUSED_REQUESTS = {
    "C-FIND": (request(0x0020, dataset=True), 0x0020),
    "C-GET": (request(0x0010, dataset=True), 0x0010),
    "C-MOVE": (request(0x0021, dataset=True), 0x0021),
    "N-EVENT-REPORT": (request(0x0100), 0x0100),
    "N-GET": (request(0x0110, requested=True), 0x0110),
    "N-SET": (request(0x0120, requested=True, dataset=True), 0x0120),
    "N-ACTION": (request(0x0130, requested=True), 0x0130),
    "N-CREATE": (request(0x0140), 0x0140),
    "N-DELETE": (request(0x0150, requested=True), 0x0150),
}


@pytest.mark.parametrize("kind", REFUSED_REQUESTS)
def test_other_requests_get_a_failure_response_and_the_association_goes_on(
    session: Session, log: pytest.LogCaptureFixture, kind: str
) -> None:
    pdus, field = REFUSED_REQUESTS[kind]
    answer = elements_of(session.send(pdus))
    assert number(answer[0x0100]) == field | 0x8000
    assert number(answer[0x0120]) == 7
    assert number(answer[0x0900]) == REFUSED
    assert answer[0x0002] == ui(rawpdu.CT)
    session.next_store_is_served()
    assert (
        f"E: cannot handle this kind of DIMSE command (0x{field:04x}), we are a Storage SCP only"
        in lines(log)
    )
    assert ABORT_LINE not in " ".join(lines(log))


RESPONSES = {
    "C-ECHO-RSP": (VERIFICATION_CX, {0x0002: ui(rawpdu.VERIFICATION), 0x0100: us(0x8030)}),
    "C-STORE-RSP": (CT_CX, {0x0002: ui(rawpdu.CT), 0x0100: us(0x8001), 0x1000: ui("1.2.3")}),
}


@pytest.mark.parametrize("kind", RESPONSES)
def test_a_response_sent_to_us_is_not_answered_and_the_association_goes_on(
    session: Session, log: pytest.LogCaptureFixture, kind: str
) -> None:
    context_id, elements = RESPONSES[kind]
    elements = {**elements, 0x0120: us(1), 0x0800: us(rawpdu.NO_DATASET), 0x0900: us(0)}
    answer = session.send(rawpdu.p_data(rawpdu.pdv(context_id, COMMAND_LAST, command(elements))))
    assert answer is None
    session.next_store_is_served()
    field = number(elements[0x0100])
    assert (
        f"E: cannot handle this kind of DIMSE command (0x{field:04x}), we are a Storage SCP only"
        in lines(log)
    )


def test_a_c_cancel_is_ignored_and_the_association_goes_on(session: Session) -> None:
    # Nothing we do can be cancelled, and a C-CANCEL has no response (PS3.7 9.3.2.3).
    cancel = command({0x0100: us(0x0FFF), 0x0120: us(1), 0x0800: us(rawpdu.NO_DATASET)})
    assert session.send(rawpdu.p_data(rawpdu.pdv(CT_CX, COMMAND_LAST, cancel))) is None
    session.next_store_is_served()


def test_a_c_echo_naming_a_storage_class_is_answered(session: Session) -> None:
    echo = command(
        {
            0x0002: ui(rawpdu.CT),
            0x0100: us(rawpdu.C_ECHO_RQ),
            0x0110: us(3),
            0x0800: us(rawpdu.NO_DATASET),
        }
    )
    answer = elements_of(session.send(rawpdu.p_data(rawpdu.pdv(CT_CX, COMMAND_LAST, echo))))
    assert number(answer[0x0100]) == 0x8030
    assert number(answer[0x0900]) == 0x0000
    session.next_store_is_served()


# --- protocol violations: A-ABORT, as dcmrecv ----------------------------------------------

ABORTED = {
    "C-STORE on a refused context": (
        rawpdu.p_data(rawpdu.pdv(MR_CX, COMMAND_LAST, store_command("1.2.3.4.20")))
        + b"".join(rawpdu.dataset_pdus(MR_CX, rawpdu.explicit_dataset("1.2.3.4.20"))),
        "on presentation context 5, which was not accepted",
    ),
    "C-ECHO on a context never proposed": (
        rawpdu.p_data(
            rawpdu.pdv(9, COMMAND_LAST, rawpdu.command_set(rawpdu.C_ECHO_RQ, dataset=False))
        ),
        "on presentation context 9, which was not accepted",
    ),
    "no Message ID": (
        rawpdu.p_data(rawpdu.pdv(CT_CX, COMMAND_LAST, store_command("1.2.3.4.21", e0110=None)))
        + b"".join(rawpdu.dataset_pdus(CT_CX, rawpdu.explicit_dataset("1.2.3.4.21"))),
        "without a Message ID",
    ),
    "dataset on another context": (
        rawpdu.p_data(rawpdu.pdv(CT_CX, COMMAND_LAST, store_command("1.2.3.4.22")))
        + b"".join(rawpdu.dataset_pdus(VERIFICATION_CX, rawpdu.explicit_dataset("1.2.3.4.22"))),
        "Presentation Context ID of command (3) and data set (1) differs",
    ),
}


@pytest.mark.parametrize("case", ABORTED)
def test_protocol_violations_abort_with_a_reason_and_no_abort_request_line(
    cfg_profile: Profile, out: Path, port: int, log: pytest.LogCaptureFixture, case: str
) -> None:
    pdus, reason = ABORTED[case]
    with our_receiver(cfg_profile, port, settings(port, out)):
        peer = rawpdu.Peer(port)
        assert peer.associate(rawpdu.associate_rq(CONTEXTS, called="ANY"))
        answer = Session(peer, out).send(pdus)
        assert answer is not None and answer[0] == rawpdu.ABORT
        assert peer.closed_by_peer(timeout=5.0)
        peer.close()
        # The receiver serves the next association.
        assert rawpdu.good_peer(port, "1.2.3.4.23") == (0x0000, 0x0000)
    errors = [line for line in lines(log) if line.startswith("E:")]
    assert len(errors) == 1 and reason in errors[0]
    assert ABORT_LINE not in " ".join(lines(log))
    assert final_files(out) == ["CT.1.2.3.4.23"]


def test_a_command_pynetdicom_cannot_decode_aborts_without_an_abort_request_line(
    session: Session, log: pytest.LogCaptureFixture
) -> None:
    # pynetdicom refuses a UID over 64 characters and its DUL aborts (A-P-ABORT, reason
    # 5): an abort of ours, which dcmrecv does not log as the peer's.
    too_long = store_command("1.2.3.4.50", e1000=ui("1." * 40 + "1"))
    dataset = rawpdu.dataset_pdus(CT_CX, rawpdu.explicit_dataset("1.2.3.4.50"))
    answer = session.send(rawpdu.p_data(rawpdu.pdv(CT_CX, COMMAND_LAST, too_long)) + dataset[0])
    assert answer is not None and answer[0] == rawpdu.ABORT
    assert session.peer.closed_by_peer(timeout=5.0)
    wait_until(
        lambda: any(r.getMessage() == "Received an invalid DIMSE message" for r in log.records),
        what="pynetdicom's error line",
    )
    wait_until(lambda: "Association Aborted" in " ".join(lines(log)), what="the end")
    assert ABORT_LINE not in " ".join(lines(log))


# --- log lines -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sop_class",
    # The fast path serves the CT; pynetdicom's path the MR on the CT context.
    [rawpdu.CT, MR],
)
def test_the_c_store_line_comes_with_the_command_and_a_cut_dataset_is_reported(
    session: Session, log: pytest.LogCaptureFixture, sop_class: str
) -> None:
    dataset = rawpdu.explicit_dataset("1.2.3.4.30", b"\x01" * 40000)
    first = rawpdu.dataset_pdus(CT_CX, dataset)[0]
    command_set = store_command("1.2.3.4.30", e0002=ui(sop_class))
    command_pdu = rawpdu.p_data(rawpdu.pdv(CT_CX, COMMAND_LAST, command_set))
    assert session.peer.send(command_pdu + first)

    def announced() -> list[logging.LogRecord]:
        return [r for r in log.records if r.getMessage() == "Received C-STORE Request (MsgID 7)"]

    wait_until(lambda: bool(announced()), what="the C-STORE line before the dataset ends")
    record = announced()[0]
    assert getattr(record, "SOP_CLASS_UID", None) == sop_class
    assert getattr(record, "SOP_INSTANCE_UID", None) == "1.2.3.4.30"
    assert getattr(record, "ASSOC_ID", None)  # the association's fields, from the DUL thread
    session.peer.close()
    wait_until(lambda: ABORT_LINE in " ".join(lines(log)), what="the abort line")
    assert lines(log)[-3:] == [
        "E: Unable to receive dataset on presentation context 0: " + PEER_ABORTED,
        "E: Unable to receive C-STORE dataset on presentation context 3",
        "I: " + ABORT_LINE,
    ]


def test_a_peer_abort_is_logged_once(session: Session, log: pytest.LogCaptureFixture) -> None:
    assert session.peer.send(rawpdu.pdu(rawpdu.ABORT, b"\0\0\0\0"))
    wait_until(lambda: ABORT_LINE in " ".join(lines(log)), what="the abort line")
    assert session.peer.closed_by_peer(timeout=5.0)
    assert [line for line in lines(log) if ABORT_LINE in line] == ["I: " + ABORT_LINE]


@pytest.mark.parametrize("mid_dataset", [False, True])
def test_our_dimse_timeout_logs_what_dcmrecv_logs(
    cfg_profile: Profile, out: Path, port: int, log: pytest.LogCaptureFixture, mid_dataset: bool
) -> None:
    # -td: dcmrecv says nothing of an idle association, two lines of a dataset cut short.
    with our_receiver(cfg_profile, port, settings(port, out, dimse_timeout=1)):
        peer = rawpdu.Peer(port)
        assert peer.associate(rawpdu.associate_rq(CONTEXTS, called="ANY"))
        if mid_dataset:
            dataset = rawpdu.explicit_dataset("1.2.3.4.31", b"\x01" * 40000)
            command_pdu = rawpdu.p_data(
                rawpdu.pdv(CT_CX, COMMAND_LAST, store_command("1.2.3.4.31"))
            )
            assert peer.send(command_pdu + rawpdu.dataset_pdus(CT_CX, dataset)[0])
        assert peer.closed_by_peer(timeout=10.0)
        peer.close()
    expected = (
        [
            "E: Unable to receive dataset on presentation context 0: " + DIMSE_TIMEOUT,
            "E: Unable to receive C-STORE dataset on presentation context 3",
        ]
        if mid_dataset
        else []
    )
    assert [line for line in lines(log) if line[0] in "EW" or ABORT_LINE in line] == expected
    assert temp_files(out) == []


def test_the_default_network_timeout_logs_an_abort_request_as_dcmrecv(
    cfg_profile: Profile, out: Path, port: int, log: pytest.LogCaptureFixture
) -> None:
    # Without -td dcmrecv's 60 s socket timeout reads as the peer's abort.
    with our_receiver(cfg_profile, port, settings(port, out)) as receiver:
        receiver.ae.network_timeout = 1  # the default's 60 s, shortened
        peer = rawpdu.Peer(port)
        assert peer.associate(rawpdu.associate_rq(CONTEXTS, called="ANY"))
        assert peer.closed_by_peer(timeout=10.0)
        peer.close()
        wait_until(lambda: ABORT_LINE in " ".join(lines(log)), what="the abort line")
    assert [line for line in lines(log) if line[0] in "EW" or ABORT_LINE in line] == [
        "I: " + ABORT_LINE
    ]


@pytest.mark.parametrize(
    ("peer_maximum", "pdv", "warning"),
    [
        (16384, 16372, None),
        (4096, 4084, None),
        (1000, 988, None),
        (131072, 131060, None),
        # DCMTK sends 128 KiB at most, also to a peer that sets no limit.
        (131073, 131060, None),
        (262144, 131060, None),
        (0, 131060, None),
        (4097, 4084, "ASSOC: PDV send length 4097 is odd (using 4096)"),
        (131071, 131058, "ASSOC: PDV send length 131071 is odd (using 131070)"),
    ],
)
def test_max_send_pdv_is_dcmtks(peer_maximum: int, pdv: int, warning: str | None) -> None:
    # Observed with DCMTK 3.6.7's dcmrecv -v for each peer maximum.
    assert max_send_pdv(peer_maximum) == (pdv, warning)


# --- pure logic ----------------------------------------------------------------------------


@pytest.mark.parametrize(("sent", "read"), [(7, 0), (3, 0), (0xFFFF, 0), (2, 2), (1, 1), (0, 0)])
def test_medium_priority_reads_an_out_of_range_priority_as_medium(sent: int, read: int) -> None:
    command_set = store_command("1.2.3.4.60", e0700=us(sent))
    assert streaming.medium_priority(command_set) == store_command("1.2.3.4.60", e0700=us(read))


_WITH_PRIORITY_7 = store_command("1.2.3.4.61", e0700=us(7))
# Cut inside the Priority's value.
CUT_IN_PRIORITY = _WITH_PRIORITY_7[: _WITH_PRIORITY_7.index(struct.pack("<HHL", 0, 0x0700, 2)) + 9]


@pytest.mark.parametrize(
    "command_set",
    [
        store_command("1.2.3.4.61", e0700=None),  # no Priority at all
        store_command("1.2.3.4.61", e0700=b"\x07\x00\x00\x00"),  # not two bytes long
        CUT_IN_PRIORITY,
        b"",
    ],
)
def test_medium_priority_leaves_other_command_sets_alone(command_set: bytes) -> None:
    assert streaming.medium_priority(command_set) == command_set


def test_a_refusal_response_answers_its_request() -> None:
    find = C_FIND()
    find.MessageID = 9
    find.AffectedSOPClassUID = rawpdu.CT
    find.Priority = 0
    response = dispatch.refusal_response(find)
    assert isinstance(response, C_FIND)
    assert response.MessageIDBeingRespondedTo == 9
    assert response.Status == dispatch.UNRECOGNIZED_OPERATION
    assert response.AffectedSOPClassUID == rawpdu.CT
    assert dispatch.command_field(find) == 0x0020
    # N-SET names a Requested SOP Instance; its response, the Affected one.
    n_set = N_SET()
    n_set.MessageID = 10
    n_set.RequestedSOPClassUID = rawpdu.CT
    n_set.RequestedSOPInstanceUID = "1.2.3.9"
    answer = dispatch.refusal_response(n_set)
    assert isinstance(answer, N_SET)
    assert (answer.AffectedSOPClassUID, answer.AffectedSOPInstanceUID) == (rawpdu.CT, "1.2.3.9")
    assert dispatch.command_field(n_set) == 0x0120
