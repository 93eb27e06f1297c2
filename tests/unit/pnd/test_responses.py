"""Hand-encoded C-STORE responses are byte for byte what pynetdicom would send."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.tag import Tag
from pynetdicom import evt
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from dcmrecvd.pnd import responses
from dcmrecvd.settings import Settings
from tests.support import asconfigs
from tests.support.asconfigs import STORE_CFG
from tests.support.peers import our_receiver
from tests.support.streaming_peer import association, dataset, final_files


def response(status: int, **fields: object) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    rsp.AffectedSOPInstanceUID = "1.2.3.4.55"
    rsp.Status = status
    for name, value in fields.items():
        setattr(rsp, name, value)
    return rsp


def pynetdicoms(rsp: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    encoded = encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


@pytest.mark.parametrize(
    "rsp",
    [
        response(0x0000),
        response(0xA700, ErrorComment="dataset not received"),
        response(0xA700, ErrorComment="odd"),
        response(0xC000),
        response(0x0111, ErrorComment="duplicate SOP instance"),
        response(0xA900, OffendingElement=[Tag(0x00080016), Tag(0x00080018)]),
        response(0x0000, AffectedSOPInstanceUID="1.2.3", MessageIDBeingRespondedTo=65535),
        response(0xC211, AffectedSOPClassUID=None, AffectedSOPInstanceUID=None),
    ],
)
def test_same_bytes_as_pynetdicom(rsp: C_STORE) -> None:
    assert responses.encode_store_response(rsp) == pynetdicoms(rsp)


def test_a_store_is_answered_without_pynetdicoms_encoder(
    tmp_path: Path, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = asconfigs.load(tmp_path, STORE_CFG)
    out = tmp_path / "out"
    out.mkdir()
    encoded: list[C_STORE] = []
    original = C_STORE_RSP.primitive_to_message

    def spy(self: C_STORE_RSP, primitive: C_STORE) -> None:
        encoded.append(primitive)
        original(self, primitive)

    monkeypatch.setattr(C_STORE_RSP, "primitive_to_message", spy)
    settings = Settings(port=port, output_dir=str(out))
    with our_receiver(profile, port, settings) as receiver, association(port) as a:
        assert a.send_c_store(dataset("1.2.3.4.9")).Status == 0x0000
        assoc = receiver.ae.active_associations[0]
        assert isinstance(assoc.dimse, responses.QuickResponseDIMSE)
        # quietlog: no dump handlers either
        assert assoc.get_handlers(evt.EVT_PDU_RECV) == []
    assert encoded == []
    assert final_files(out) == ["CT.1.2.3.4.9"]
