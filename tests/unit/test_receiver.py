"""dcmrecvd.receiver: the AE it builds, the events it wires, and its association policy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt

from dcmrecvd import receiver
from dcmrecvd.profiles import BUILTIN_VERIFICATION, VERIFICATION, Profile
from dcmrecvd.receiver import Receiver
from dcmrecvd.settings import Settings
from dcmrecvd.store import filemeta, objectstore, storage
from dcmrecvd.store.freespace import Reserve
from tests.support import dicomgen
from tests.support.net import LOCALHOST
from tests.support.peers import Proposal, our_receiver, probe
from tests.support.streaming_peer import wait_until

CT_PROPOSAL = Proposal(contexts=((dicomgen.CT, (ExplicitVRLittleEndian,)),))


def test_the_ae_carries_dcmrecv_settings(profile: Profile) -> None:
    settings = Settings(aetitle="STORE", max_pdu=16385, acse_timeout=7, dimse_timeout=None)
    ae = Receiver(settings, profile).ae
    assert ae.ae_title == "STORE"
    assert ae.maximum_pdu_size == 16384  # DCMTK rounds an odd size down
    assert (ae.acse_timeout, ae.dimse_timeout) == (7, None)
    assert ae.network_timeout == receiver.DEFAULT_NETWORK_TIMEOUT
    assert ae.implementation_class_uid == filemeta.IMPLEMENTATION_CLASS_UID
    assert ae.implementation_version_name == filemeta.IMPLEMENTATION_VERSION_NAME
    # The receiver's Admission counts associations, not pynetdicom's AE.
    assert ae.maximum_associations == 2**31 - 1


def test_a_dimse_timeout_is_also_the_network_timeout(profile: Profile) -> None:
    assert Receiver(Settings(dimse_timeout=5), profile).ae.network_timeout == 5


def test_every_event_the_policy_needs_is_wired(profile: Profile) -> None:
    events = {handler[0] for handler in Receiver(Settings(), profile).handlers()}
    assert events == {
        evt.EVT_CONN_OPEN,
        evt.EVT_REQUESTED,
        evt.EVT_ACCEPTED,
        evt.EVT_RELEASED,
        evt.EVT_ACSE_RECV,
        evt.EVT_ABORTED,
        evt.EVT_CONN_CLOSE,
        evt.EVT_C_ECHO,
        evt.EVT_C_STORE,
    }


def test_the_store_follows_the_settings(profile: Profile, out: Path) -> None:
    settings = Settings(output_dir=str(out), free_space_reserve_bytes=10)
    store = Receiver(settings, profile).store
    assert store.spool.directory == out / storage.SPOOL_DIRECTORY
    assert store.reserve == Reserve(bytes=10)
    assert store.quarantine is None


@pytest.mark.parametrize(
    ("peer_maximum", "expected"),
    [
        (0, (131072 - 12, None)),
        (16384, (16384 - 12, None)),
        (16385, (16384 - 12, "ASSOC: PDV send length 16385 is odd (using 16384)")),
        (1_000_000, (131072 - 12, None)),
    ],
)
def test_max_send_pdv_as_dcmtk(peer_maximum: int, expected: tuple[int, str | None]) -> None:
    assert receiver.max_send_pdv(peer_maximum) == expected


def test_a_wrong_called_ae_title_is_rejected_when_checked(profile: Profile, port: int) -> None:
    settings = Settings(port=port, aetitle="STORE", check_called_aetitle=True)
    with our_receiver(profile, port, settings):
        wrong = probe(port, Proposal(CT_PROPOSAL.contexts, called="OTHER"))
        right = probe(port, Proposal(CT_PROPOSAL.contexts, called="STORE"))
    assert wrong.rejection == receiver.REJECT_CALLED_AE_TITLE
    assert right.rejection is None


def test_no_acceptable_context_is_rejected(profile: Profile, port: int) -> None:
    with our_receiver(profile, port) as running:
        observed = probe(port, Proposal(contexts=((VERIFICATION, ("1.2.3.4.5",)),)))
        wait_until(lambda: running.admission.running == 0, what="admission given back")
    assert observed.rejection == receiver.REJECT_NO_ACCEPTABLE_CONTEXTS


def test_a_file_system_below_the_reserve_rejects_associations(
    profile: Profile, port: int, out: Path
) -> None:
    full = os.statvfs_result((1000, 1000, 1000, 0, 0, 100, 100, 100, 0, 255))
    with our_receiver(profile, port, Settings(port=port, output_dir=str(out))) as running:
        running.store.reserve = Reserve(bytes=1, statvfs=lambda _: full)
        observed = probe(port, CT_PROPOSAL)
    assert observed.rejection == receiver.REJECT_LOCAL_LIMIT_EXCEEDED


def test_an_accepted_association_is_counted_and_echo_succeeds(port: int) -> None:
    with our_receiver(BUILTIN_VERIFICATION, port) as running:
        ae = AE(ae_title="PROBE")
        ae.add_requested_context(VERIFICATION)
        assoc = ae.associate(LOCALHOST, port)
        try:
            assert assoc.is_established
            assert assoc.send_c_echo().Status == objectstore.SUCCESS
        finally:
            assoc.release()
            ae.shutdown()
        wait_until(lambda: running.admission.running == 0, what="admission given back")
        assert running.stats.totals().associations == 1


def test_a_serving_process_validates_no_uids_and_freezes_its_start_up_objects() -> None:
    # In a child: both settings are for the whole process.
    code = (
        "import gc, pydicom.config\n"
        "from dcmrecvd.receiver import tune_process\n"
        "before = gc.get_freeze_count()\n"
        "tune_process()\n"
        "print(before, gc.get_freeze_count() > 1000,"
        " pydicom.config.settings.reading_validation_mode == pydicom.config.IGNORE)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0", "True", "True"]
