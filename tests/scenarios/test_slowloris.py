"""Slow and stuck peers are cut by the ACSE and network timeouts and starve nobody.

Every "cut" is observed as the receiver closing the peer's socket before a deadline of
the timeout plus a margin; no test measures speed. The receiver runs in process with
-ta 2 / -td 2 (the real dcmrecv program in the last test).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcmrecvd.settings import Settings
from tests.support import asconfigs, rawpdu
from tests.support.asconfigs import VERIFY_CT_CFG
from tests.support.net import free_port
from tests.support.peers import our_receiver, wait_listening
from tests.support.streaming_peer import final_files, temp_files, wait_until

TIMEOUT = 2
# Scheduling slack on a loaded 2-core CI machine; far below any timeout DCMTK uses.
MARGIN = 3.0
IDLE_PEERS = 8
DCMRECV = str(Path(sys.executable).with_name("dcmrecv"))


@pytest.fixture
def receiver_port(tmp_path: Path, out: Path) -> Iterator[int]:
    port = free_port()
    settings = Settings(port=port, output_dir=str(out), acse_timeout=TIMEOUT, dimse_timeout=TIMEOUT)
    with our_receiver(asconfigs.load(tmp_path, VERIFY_CT_CFG), port, settings) as receiver:
        yield port
        wait_until(lambda: not receiver.ae.active_associations, what="associations ended")


class Trickler(threading.Thread):
    """Sends `data` one byte every `interval` s until the receiver closes the socket."""

    def __init__(self, peer: rawpdu.Peer, data: bytes, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.peer = peer
        self.data = data
        self.interval = interval
        self.started = time.monotonic()
        self.sent = 0
        self.cut_after: float | None = None

    def run(self) -> None:
        for byte in self.data:
            if not self.peer.send(bytes([byte])):
                break
            self.sent += 1
            if self.peer.closed_by_peer(self.interval):
                break
        else:
            return
        self.cut_after = time.monotonic() - self.started


def test_idle_and_trickling_peers_are_cut_while_a_good_peer_stores(
    receiver_port: int, out: Path
) -> None:
    idle = [rawpdu.Peer(receiver_port) for _ in range(IDLE_PEERS)]
    opened = time.monotonic()
    trickler = Trickler(rawpdu.Peer(receiver_port), rawpdu.associate_rq())
    trickler.start()
    try:
        assert rawpdu.good_peer(receiver_port, "1.2.3.4.1") == (0x0000, 0x0000)
        # The good peer was served while every slow peer still held its connection.
        assert all(peer.is_open() for peer in idle)
        assert trickler.is_alive() and trickler.cut_after is None
        assert final_files(out) == ["CT.1.2.3.4.1"]
        for peer in idle:
            assert peer.closed_by_peer(opened + TIMEOUT + MARGIN - time.monotonic())
        trickler.join(TIMEOUT + MARGIN)
        assert trickler.cut_after is not None
        assert trickler.cut_after < TIMEOUT + MARGIN
        # Cut before the request was whole: the timeout bounds all of it, not each byte.
        assert trickler.sent < len(trickler.data)
    finally:
        for peer in idle:
            peer.close()
        trickler.peer.close()
    assert temp_files(out) == []


@pytest.mark.parametrize("sent", [1, 3, 6, 40])
def test_association_request_stalled_midway_is_cut(receiver_port: int, sent: int) -> None:
    # 1 and 3 bytes stop inside the PDU header, 6 right after it, 40 inside the body.
    peer = rawpdu.Peer(receiver_port)
    try:
        assert peer.send(rawpdu.associate_rq()[:sent])
        assert peer.closed_by_peer(TIMEOUT + MARGIN)
    finally:
        peer.close()
    assert rawpdu.good_peer(receiver_port, f"1.2.3.4.{sent}") == (0x0000, 0x0000)


def store_start(sop_instance: str) -> tuple[bytes, list[bytes]]:
    """A C-STORE-RQ command PDU and the 13 PDUs of a 200 KiB dataset on context 3.

    Five PDUs hold more than the receiver keeps in memory, so a temp file then exists.
    """
    command = rawpdu.command_set(rawpdu.C_STORE_RQ, sop_instance=sop_instance)
    command_pdu = rawpdu.p_data(rawpdu.pdv(3, rawpdu.COMMAND | rawpdu.LAST, command))
    dataset = rawpdu.explicit_dataset(sop_instance, b"\x07" * 200 * 1024)
    return command_pdu, rawpdu.dataset_pdus(3, dataset)


def associated(port: int) -> rawpdu.Peer:
    peer = rawpdu.Peer(port)
    contexts = [(1, rawpdu.VERIFICATION, (rawpdu.IMPLICIT,)), (3, rawpdu.CT, (rawpdu.EXPLICIT,))]
    assert peer.associate(rawpdu.associate_rq(contexts))
    return peer


def test_stuck_in_the_middle_of_a_dataset_pdu_is_aborted_and_leaves_no_temp_file(
    receiver_port: int, out: Path
) -> None:
    command_pdu, data_pdus = store_start("1.2.3.4.20")
    peer = associated(receiver_port)
    try:
        assert peer.send(command_pdu + b"".join(data_pdus[:5]) + data_pdus[5][:8000])
        wait_until(lambda: temp_files(out) != [], what="temp file of the half dataset")
        stalled = time.monotonic()
        assert peer.closed_by_peer(TIMEOUT + MARGIN)
        assert time.monotonic() - stalled < TIMEOUT + MARGIN
    finally:
        peer.close()
    wait_until(lambda: temp_files(out) == [], what="temp file removed")
    assert final_files(out) == []
    assert rawpdu.good_peer(receiver_port, "1.2.3.4.21") == (0x0000, 0x0000)


def test_stuck_between_dataset_pdus_is_aborted_and_leaves_no_temp_file(
    receiver_port: int, out: Path
) -> None:
    command_pdu, data_pdus = store_start("1.2.3.4.22")
    peer = associated(receiver_port)
    try:
        assert peer.send(command_pdu + b"".join(data_pdus[:5]))
        wait_until(lambda: temp_files(out) != [], what="temp file of the half dataset")
        assert peer.closed_by_peer(TIMEOUT + MARGIN)
    finally:
        peer.close()
    wait_until(lambda: temp_files(out) == [], what="temp file removed")
    assert final_files(out) == []


def test_a_pdu_trickled_into_an_association_is_cut(receiver_port: int, out: Path) -> None:
    echo = rawpdu.command_set(rawpdu.C_ECHO_RQ, sop_class=rawpdu.VERIFICATION, dataset=False)
    peer = associated(receiver_port)
    trickler = Trickler(peer, rawpdu.p_data(rawpdu.pdv(1, rawpdu.COMMAND | rawpdu.LAST, echo)))
    trickler.start()
    try:
        trickler.join(TIMEOUT + MARGIN)
        assert trickler.cut_after is not None
        assert trickler.sent < len(trickler.data)
    finally:
        peer.close()
    assert rawpdu.good_peer(receiver_port, "1.2.3.4.23") == (0x0000, 0x0000)
    assert final_files(out) == ["CT.1.2.3.4.23"]


@pytest.mark.slow
def test_dcmrecv_program_cuts_idle_and_stalled_peers(out: Path, tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "store.cfg"
    cfg.write_text(VERIFY_CT_CFG)
    args = ["-ta", str(TIMEOUT), "-td", str(TIMEOUT), "-xf", str(cfg), "Store", "-od", str(out)]
    proc = subprocess.Popen(
        [DCMRECV, *args, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_listening(port, proc)
        idle = rawpdu.Peer(port)
        stalled = rawpdu.Peer(port)
        opened = time.monotonic()
        assert stalled.send(rawpdu.associate_rq()[:40])
        try:
            assert rawpdu.good_peer(port, "1.2.3.4.30") == (0x0000, 0x0000)
            assert idle.is_open() and stalled.is_open()
            for peer in (idle, stalled):
                assert peer.closed_by_peer(opened + TIMEOUT + MARGIN - time.monotonic())
        finally:
            idle.close()
            stalled.close()
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert final_files(out) == ["CT.1.2.3.4.30"]
