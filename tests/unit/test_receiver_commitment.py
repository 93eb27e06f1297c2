"""Storage Commitment through the receiver in this process: the SOP class negotiated with
its roles, the N-ACTION answered on the DIMSE path, the report on the same association,
and the dcmrecv drop-in, which does not serve it."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from dcmrecvd.commitment import model, pending
from dcmrecvd.config.access import AccessPolicy, PeerRule
from dcmrecvd.profiles import AcceptedContext, Profile
from dcmrecvd.settings import CommitmentSettings, ReportDestination, Settings
from dcmrecvd.store.index import Index
from tests.support import commitment as modality
from tests.support import waiting
from tests.support.daemon import ct, requestor
from tests.support.peers import our_receiver
from tests.support.streaming_peer import settings

CT = "1.2.840.10008.5.1.4.1.1.2"
TRANSACTION = "1.2.826.0.1.3680043.10.6.1"


def committing(port: int, out: Path, tmp_path: Path, **commitment: object) -> Settings:
    return settings(
        port,
        out,
        index_path=str(tmp_path / "index.sqlite"),
        commitment=CommitmentSettings(**commitment),  # type: ignore[arg-type]
    )


def test_the_report_comes_back_on_the_association_that_took_the_scp_role(
    profile: Profile, out: Path, port: int, tmp_path: Path
) -> None:
    with our_receiver(profile, port, committing(port, out, tmp_path)):
        store = requestor(port, [CT], calling="MODALITY")
        assert store.send_c_store(ct("1.2.3.1")).Status == 0
        store.release()
        here = modality.Reports()
        assoc = modality.associate(port, report_here=here)
        assert assoc.is_established
        # The receiver granted both roles: the modality may serve the report.
        [context] = assoc.accepted_contexts
        assert (context.as_scu, context.as_scp) == (True, True)
        try:
            assert modality.ask(assoc, TRANSACTION, [(CT, "1.2.3.1"), (CT, "1.2.3.2")]) == 0
            [report] = waiting.found(lambda: here.of(TRANSACTION), "the report")
        finally:
            assoc.release()
    assert report.stored() == [(CT, "1.2.3.1")]
    assert report.failed() == [(CT, "1.2.3.2", 0x0112)]


def test_a_request_whose_report_could_go_nowhere_is_refused(
    profile: Profile, out: Path, port: int, tmp_path: Path
) -> None:
    with our_receiver(profile, port, committing(port, out, tmp_path)):
        assoc = modality.associate(port)  # no SCP role, and no [peer] destination
        try:
            assert modality.ask(assoc, TRANSACTION, [(CT, "1.2.3.1")]) == model.NOT_AUTHORIZED
        finally:
            assoc.release()


def test_a_peer_with_a_destination_gets_success_and_no_report_here(
    profile: Profile, out: Path, port: int, tmp_path: Path
) -> None:
    destination = ReportDestination("127.0.0.1", 9)
    configured = dataclasses.replace(
        committing(port, out, tmp_path, destinations=(("ct", destination),)),
        access=AccessPolicy((PeerRule("ct", calling_aetitle="MODALITY"),)),
    )
    with our_receiver(profile, port, configured):
        assoc = modality.associate(port)
        try:
            assert modality.ask(assoc, TRANSACTION, [(CT, "1.2.3.1")]) == 0
        finally:
            assoc.release()
    # Recorded for the commitment process, due at once, with the rule's destination.
    with Index(tmp_path / "index.sqlite") as listing:
        [kept] = pending.due(listing, time.time(), 10)
    assert (kept.request.transaction_uid, kept.peer, kept.destination) == (
        TRANSACTION,
        "ct",
        destination,
    )


def test_the_dcmrecv_drop_in_does_not_serve_n_action(out: Path, port: int, tmp_path: Path) -> None:
    # Even with the SOP class in its profile, as DCMTK's dcmrecv: 0x0211, no report.
    listed = Profile("Commit", (AcceptedContext(model.SOP_CLASS, ("1.2.840.10008.1.2.1",)),))
    with our_receiver(listed, port, settings(port, out)):
        here = modality.Reports()
        assoc = modality.associate(port, report_here=here)
        assert assoc.is_established
        try:
            assert modality.ask(assoc, TRANSACTION, [(CT, "1.2.3.1")]) == 0x0211
        finally:
            assoc.release()
    assert here.received == []
