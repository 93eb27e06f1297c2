"""What the receiver reports to its Stats: refusals by reason, responses by peer and
status, timings, the live entries of associations, TLS handshakes that fail."""

from __future__ import annotations

import contextlib
import socket
import ssl
from pathlib import Path

from pynetdicom import AE

from dcmrecvd.config.access import AccessPolicy, PeerRule
from dcmrecvd.metrics import snapshot
from dcmrecvd.pnd.server import Listener, Serving
from dcmrecvd.profiles import AcceptedContext, Profile, all_storage_profile
from dcmrecvd.receiver import Receiver
from dcmrecvd.service.board import Board, SharedStats
from dcmrecvd.settings import Settings
from dcmrecvd.stats import Identity, Live
from tests.support import certs, dicomgen
from tests.support.net import LOCALHOST, free_port
from tests.support.peers import our_receiver
from tests.support.streaming_peer import wait_until

EXPLICIT = "1.2.840.10008.1.2.1"


def shared() -> tuple[Board, SharedStats]:
    board = Board()
    slot = board.claim()
    board.assign(slot, 4242)
    board.slot = slot
    return board, SharedStats(board)


def send(port: int, calling: str, uids: list[str], sop_class: str = dicomgen.CT) -> list[int]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(sop_class, EXPLICIT)
    assoc = ae.associate(LOCALHOST, port, ae_title="DCMRECV")
    if not assoc.is_established:
        return []
    try:
        return [
            int(assoc.send_c_store(dicomgen.part10(dicomgen.Spec(sop_class, uid))).Status)
            for uid in uids
        ]
    finally:
        assoc.release()


def test_stores_and_refusals_are_counted_by_peer_reason_and_status(tmp_path: Path) -> None:
    port = free_port()
    access = AccessPolicy((PeerRule("ct", calling_aetitle="CT01"),), accept_unknown=True)
    settings = Settings(port=port, output_dir=str(tmp_path), access=access)
    board, stats = shared()
    profile = Profile("ct", (AcceptedContext(dicomgen.CT, (EXPLICIT,)),))
    with our_receiver(profile, port, settings, stats) as receiver:
        assert send(port, "CT01", ["1.2.3.4.1", "1.2.3.4.2"]) == [0, 0]
        assert send(port, "STRANGER", ["1.2.3.4.3"]) == [0]
        # MR only: no context to accept.
        assert send(port, "CT01", [], sop_class=dicomgen.MR) == []
        wait_until(lambda: not receiver.ae.active_associations, what="associations ended")
    found = board.metrics()
    assert found.associations_accepted == 2
    assert found.associations_rejected["no-contexts"] == 1
    assert found.responses[("ct", "success")] == 2
    assert found.responses[(snapshot.OTHER_PEER, "success")] == 1
    assert found.instances == {snapshot.OTHER_PEER: 1, "ct": 2}
    stored = sum(p.stat().st_size for p in tmp_path.iterdir() if p.is_file())
    # The dataset's bytes: the files add their File Meta headers.
    assert 0 < sum(found.bytes.values()) < stored
    assert found.commit_seconds.count == 3 and found.fsync_seconds.count == 3
    assert found.fsync_seconds.total > 0  # fsync is on
    assert found.live == ()  # every association ended and closed its entry


class Recording(SharedStats):
    """Records each live entry's calls, to see them in order."""

    def __init__(self, board: Board) -> None:
        super().__init__(board)
        self.calls: list[tuple[str, object]] = []

    def live(self, association: Identity) -> Live:
        inner = super().live(association)
        calls = self.calls
        calls.append(("open", association.peer))

        class Recorded(Live):
            def begin(self, sop_instance_uid: str) -> None:
                calls.append(("begin", sop_instance_uid))
                inner.begin(sop_instance_uid)

            def progress(self, received: int) -> None:
                calls.append(("progress", received))
                inner.progress(received)

            def end(self, stored: int | None) -> None:
                calls.append(("end", stored))
                inner.end(stored)

            def close(self) -> None:
                calls.append(("close", None))
                inner.close()

        return Recorded()


def test_a_live_entry_follows_each_object(tmp_path: Path) -> None:
    port = free_port()
    board = Board()
    slot = board.claim()
    board.assign(slot, 4242)
    board.slot = slot
    stats = Recording(board)
    settings = Settings(port=port, output_dir=str(tmp_path))
    with our_receiver(all_storage_profile("default"), port, settings, stats) as receiver:
        assert send(port, "CT01", ["1.2.3.4.9"]) == [0]
        wait_until(lambda: not receiver.ae.active_associations, what="association ended")
        wait_until(lambda: ("close", None) in stats.calls, what="entry closed")
    kinds = [kind for kind, _ in stats.calls]
    assert kinds[0] == "open" and kinds[1] == "begin" and kinds[-2:] == ["end", "close"]
    assert set(kinds[2:-2]) == {"progress"}
    sizes = [value for kind, value in stats.calls if kind == "progress" and isinstance(value, int)]
    assert sizes == sorted(sizes) and sizes[-1] == stats.calls[-2][1]
    assert ("begin", "1.2.3.4.9") in stats.calls


def test_a_failed_tls_handshake_is_counted(tmp_path: Path) -> None:
    key, certificate = certs.self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    board, stats = shared()
    port = free_port()
    receiver = Receiver(
        Settings(port=port, output_dir=str(tmp_path)), all_storage_profile("default"), stats=stats
    )
    listener = Listener.bind(LOCALHOST, port)
    serving = Serving(receiver, listener, context)
    try:
        with socket.create_connection((LOCALHOST, port)) as plain:
            plain.sendall(b"not a TLS client hello\r\n" * 4)
            plain.settimeout(5)
            # The server answers with an alert or closes: either ends the wait.
            with contextlib.suppress(OSError):
                plain.recv(100)
        wait_until(lambda: board.metrics().tls_handshake_failures == 1, what="the failure counted")
    finally:
        serving.stop_accepting()
        listener.close()
        receiver.stop()
