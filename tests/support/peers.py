"""Test peers: DCMTK's dcmrecv as a subprocess, our Receiver in process, and probes."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pynetdicom import AE, build_role, evt
from pynetdicom.events import Event
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.pdu_primitives import (
    SCP_SCU_RoleSelectionNegotiation,
    SOPClassExtendedNegotiation,
)

from dcmrecvd.pnd.server import Listener, Serving
from dcmrecvd.profiles import Profile
from dcmrecvd.receiver import Receiver
from dcmrecvd.settings import Settings
from dcmrecvd.stats import Stats
from tests.support.net import LOCALHOST, free_port


def wait_listening(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 10
) -> None:
    """Wait until something accepts TCP connections on `port` (or `proc` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"receiver exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((LOCALHOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)  # polling interval of the deadline loop, not synchronisation
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


@contextmanager
def dcmtk_receiver(
    binary: str, args: Sequence[str], port: int
) -> Iterator[subprocess.Popen[bytes]]:
    """DCMTK's dcmrecv listening on `port` with `args`."""
    proc = subprocess.Popen(
        [binary, *args, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()


@contextmanager
def receiver(binary: str, args: list[str], log: list[str]) -> Iterator[int]:
    """`binary` serving on a free port until the block ends; its stderr lines go to `log`."""
    port = free_port()
    proc = subprocess.Popen(
        [binary, *args, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_listening(port, proc)
        yield port
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        log.extend(err.decode(errors="replace").splitlines())


@contextmanager
def our_receiver(
    profile: Profile, port: int, settings: Settings | None = None, stats: Stats | None = None
) -> Iterator[Receiver]:
    """Our Receiver serving `profile` in this process."""
    receiver = Receiver(settings or Settings(port=port), profile, stats=stats)
    listener = Listener.bind(LOCALHOST, port)
    serving = Serving(receiver, listener)
    try:
        yield receiver
    finally:
        serving.stop_accepting()
        listener.close()
        receiver.stop()


@dataclass(frozen=True)
class Observed:
    """What a requestor sees of the association negotiation."""

    rejection: tuple[int, int, int] | None
    contexts: tuple[tuple[int, str, int, str | None], ...]
    roles: tuple[tuple[str, bool, bool], ...]
    extended: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Proposal:
    """An A-ASSOCIATE-RQ to send: contexts, role items, extended items, AE titles."""

    contexts: tuple[tuple[str, tuple[str, ...]], ...]
    roles: tuple[tuple[str, bool, bool], ...] = ()
    extended: tuple[tuple[str, bytes], ...] = ()
    calling: str = "PROBE"
    called: str = "ANY-SCP"


def probe(port: int, proposal: Proposal) -> Observed:
    """Associate with pynetdicom, record the answer, release."""
    ae = AE(ae_title=proposal.calling)
    ae.acse_timeout = 10
    for abstract, syntaxes in proposal.contexts:
        ae.add_requested_context(abstract, list(syntaxes))
    ext_neg: list[SCP_SCU_RoleSelectionNegotiation | SOPClassExtendedNegotiation] = [
        build_role(uid, scu_role=scu, scp_role=scp) for uid, scu, scp in proposal.roles
    ]
    for uid, data in proposal.extended:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = uid
        item.service_class_application_information = data
        ext_neg.append(item)
    # pynetdicom's requestor can miss an A-ASSOCIATE-RJ when the peer closes the
    # connection right after it (it then reports an abort), so record the RJ on arrival.
    rejections: list[A_ASSOCIATE_RJ] = []

    def on_pdu(event: Event) -> None:
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            rejections.append(event.pdu)

    assoc = ae.associate(
        LOCALHOST,
        port,
        ae_title=proposal.called,
        ext_neg=list(ext_neg) or None,
        evt_handlers=[(evt.EVT_PDU_RECV, on_pdu)],
    )
    try:
        if rejections:
            rj = rejections[0]
            answer = (int(rj.result or 0), int(rj.source or 0), int(rj.reason_diagnostic or 0))
            return Observed(answer, (), (), ())
        if not assoc.is_established:
            raise AssertionError("association neither established nor rejected")
        contexts = sorted(
            (
                int(cx.context_id or 0),
                str(cx.abstract_syntax),
                int(cx.result or 0),
                str(cx.transfer_syntax[0]) if cx.result == 0 else None,
            )
            for cx in assoc.accepted_contexts + assoc.rejected_contexts
        )
        roles = sorted(
            (str(uid), bool(item.scu_role), bool(item.scp_role))
            for uid, item in assoc.acceptor.role_selection.items()
        )
        extended = sorted(
            (str(uid), bytes(data)) for uid, data in assoc.acceptor.sop_class_extended.items()
        )
        return Observed(None, tuple(contexts), tuple(roles), tuple(extended))
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def ac_dump(stderr_or_stdout: str) -> list[str]:
    """The presentation-context part of a DCMTK tool's debug dump of the A-ASSOCIATE-AC."""
    lines = [line.removeprefix("D: ") for line in stderr_or_stdout.splitlines()]
    try:
        start = lines.index("====================== BEGIN A-ASSOCIATE-AC =====================")
    except ValueError:
        return []
    block = lines[start:]
    first = next(i for i, line in enumerate(block) if line.startswith("Presentation Contexts:"))
    last = next(
        i for i, line in enumerate(block) if line.startswith("Accepted Extended Negotiation")
    )
    return block[first : last + 1]
