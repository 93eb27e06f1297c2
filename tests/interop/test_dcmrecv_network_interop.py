"""dcmrecv side by side, network and naming: what DCMTK's dcmrecv does, ours does.

Unique-name schemes are compared by shape (prefix, separators, extension) since their
random parts differ by design; everything else is compared as it is.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

from tests.support import dicomgen, dimse, rawpdu
from tests.support.asconfigs import DCMRECV_CFG
from tests.support.net import LOCALHOST, free_port
from tests.support.peers import receiver, wait_listening
from tests.support.streaming_peer import body

pytestmark = [pytest.mark.interop, pytest.mark.slow]

DCMTK = "/usr/bin/dcmrecv"
OURS = str(Path(sys.executable).with_name("dcmrecv"))
EXPLICIT = "1.2.840.10008.1.2.1"
DEADLINE = 30.0


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "store.cfg"
    path.write_text(DCMRECV_CFG)
    return path


def associate(port: int, contexts: list[str], max_pdu: int = 16382) -> Association:
    ae = AE(ae_title="PYSCU")
    ae.maximum_pdu_size = max_pdu
    for uid in contexts:
        ae.add_requested_context(uid, [EXPLICIT])
    assoc = ae.associate(LOCALHOST, port, ae_title="ANY")
    assert assoc.is_established
    return assoc


def wait_ended(assoc: Association) -> None:
    deadline = time.monotonic() + DEADLINE
    while assoc.is_alive() and time.monotonic() < deadline:
        assoc.join(0.1)
    assert not assoc.is_alive(), "the receiver did not end the association"


def part10(sop_class: str, instance: str) -> Dataset:
    return dicomgen.part10(dicomgen.Spec(sop_class, instance))


# --- naming schemes by shape -------------------------------------------------------------

SHAPES = {
    "+fu": (r"\.X\.[0-9.]+", ".X.<uid>"),
    "+fsu": (r"_[0-9a-f]{16}", "_<hex>"),
    "+fst": (r"^[0-9]{14}\.[0-9]{6}\.", "<time>."),
}


def stored_shapes(binary: str, cfg: Path, out: Path, args: list[str], objects: Path) -> list[str]:
    out.mkdir(parents=True)
    scheme = args[0]
    pattern, token = SHAPES[scheme]
    log: list[str] = []
    with receiver(binary, ["-xf", str(cfg), "Store", "-od", str(out), *args], log) as port:
        scu = ["storescu", "+sd", "-xf", str(cfg), "Store", "-aec", "ANY"]
        sent = subprocess.run(
            [*scu, LOCALHOST, str(port), str(objects)], capture_output=True, check=False
        )
    assert sent.returncode == 0, sent.stderr
    names = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    return sorted(re.sub(pattern, token, name) for name in names)


@pytest.mark.parametrize("args", [["+fu"], ["+fsu"], ["+fst"], ["+fsu", "-fe", ".dcm"]])
def test_unique_names_have_dcmtks_shapes(
    dcmtk_dcmrecv: str, cfg: Path, tmp_path: Path, args: list[str]
) -> None:
    objects = tmp_path / "objects"
    dicomgen.write_all(dicomgen.STANDARD + dicomgen.PRIVATE, objects)
    theirs = stored_shapes(DCMTK, cfg, tmp_path / "t", args, objects)
    ours = stored_shapes(OURS, cfg, tmp_path / "o", args, objects)
    assert len(theirs) == len(dicomgen.STANDARD + dicomgen.PRIVATE)
    assert ours == theirs


# --- DIMSE -------------------------------------------------------------------------------


def _find(binary: str, cfg: Path) -> tuple[int | None, bool, list[str]]:
    """A C-FIND: its status (None if none came), whether the association was aborted,
    and the error lines."""
    log: list[str] = []
    with receiver(binary, ["-v", "-xf", str(cfg), "Store"], log) as port:
        assoc = associate(port, [dicomgen.CT])
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        status, _ = next(assoc.send_c_find(query, dicomgen.CT), (None, None))
        if assoc.is_established:
            assoc.release()
        wait_ended(assoc)
        aborted = assoc.is_aborted
    answer = None if status is None or "Status" not in status else int(status.Status)
    return answer, aborted, [line for line in log if line.startswith("E:")]


def test_other_dimse_requests_get_dcmrecvs_line_and_a_failure_response(
    dcmtk_dcmrecv: str, cfg: Path
) -> None:
    # dcmrecv aborts the association; we answer 0x0211 and go on (README: differences).
    theirs = _find(DCMTK, cfg)
    assert theirs[1] and len(theirs[2]) == 1
    assert _find(OURS, cfg) == (0x0211, False, theirs[2])


def _raw_requests(
    binary: str, cfg: Path, out: Path, requests: list[bytes], args: list[str]
) -> tuple[list[int | None], list[str], dict[str, bytes], list[str]]:
    """Raw C-STOREs, then a plain one, on one association: the statuses (None: no
    response), the stored files' names and dataset bytes, and the log lines."""
    out.mkdir(parents=True)
    log: list[str] = []
    with receiver(binary, ["-xf", str(cfg), "Store", "-od", str(out), *args], log) as port:
        peer = rawpdu.Peer(port)
        assert peer.associate(rawpdu.associate_rq(dimse.CONTEXTS, called="ANY"))
        statuses = []
        for pdus in [*requests, _store_pdus("1.2.3.4.99")]:
            peer.send(pdus)
            statuses.append(rawpdu.response_status(peer.read_pdu(timeout=10.0)))
        peer.send(rawpdu.release_rq())
        peer.read_pdu()
        peer.close()
    files = {p.name: body(p) for p in out.iterdir() if p.is_file()}
    shown = [
        line.replace(str(out), "OUT")
        for line in log
        if line[:2] in ("E:", "W:") or "C-STORE" in line or "object to file" in line
    ]
    return statuses, shown, files, sorted(files)


def _store_pdus(uid: str, command_set: bytes | None = None) -> bytes:
    command = command_set or dimse.store_command(uid)
    pdus = rawpdu.p_data(rawpdu.pdv(dimse.CT_CX, dimse.COMMAND_LAST, command))
    dataset = rawpdu.explicit_dataset(uid)
    return pdus + b"".join(rawpdu.dataset_pdus(dimse.CT_CX, dataset))


ui = dimse.ui


@pytest.mark.parametrize(
    "command_set",
    [
        # A sender that misread a file.
        dimse.store_command("1.2.3.4.10", e0002=ui("31")),
        dimse.store_command("1.2.3.4.10", e0002=ui(dimse.STUDY_ROOT_FIND)),
        dimse.store_command("1.2.3.4.10", e0002=ui(dicomgen.MR)),
        dimse.store_command("1.2.3.4.10", e0700=dimse.us(7)),
    ],
    ids=["unknown class", "query model", "MR on the CT context", "priority 7"],
)
def test_c_stores_pynetdicom_refused_are_stored_like_dcmrecv(
    dcmtk_dcmrecv: str, cfg: Path, tmp_path: Path, command_set: bytes
) -> None:
    requests = [_store_pdus("1.2.3.4.10", command_set)]
    theirs = _raw_requests(DCMTK, cfg, tmp_path / "t", requests, ["-v"])
    assert theirs[0] == [0x0000, 0x0000]
    assert _raw_requests(OURS, cfg, tmp_path / "o", requests, ["-v"]) == theirs


# --- network options ---------------------------------------------------------------------


def _advertised_pdu(binary: str, cfg: Path, pdu: str) -> int:
    with receiver(binary, ["-xf", str(cfg), "Store", "-pdu", pdu], []) as port:
        assoc = associate(port, [dicomgen.CT])
        try:
            return int(assoc.acceptor.maximum_length or 0)
        finally:
            assoc.release()


@pytest.mark.parametrize("pdu", ["4096", "5001", "131072"])
def test_max_pdu_like_dcmrecv(dcmtk_dcmrecv: str, cfg: Path, pdu: str) -> None:
    theirs = _advertised_pdu(DCMTK, cfg, pdu)
    assert theirs == int(pdu) & ~1
    assert _advertised_pdu(OURS, cfg, pdu) == theirs


def _peer_lines(binary: str, cfg: Path, args: list[str]) -> list[str]:
    log: list[str] = []
    with receiver(binary, ["-v", "-xf", str(cfg), "Store", *args], log) as port:
        associate(port, [dicomgen.CT]).release()
    # Only ours: DCMTK also logs wait_listening's probe, which sends no request.
    return [line for line in log if line.startswith("I: Association Received") and "PYSCU" in line]


@pytest.mark.parametrize("args", [[], ["-dhl"]])
def test_peer_name_like_dcmrecv(dcmtk_dcmrecv: str, cfg: Path, args: list[str]) -> None:
    theirs = _peer_lines(DCMTK, cfg, args)
    assert len(theirs) == 1
    assert _peer_lines(OURS, cfg, args) == theirs


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(DEADLINE)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_acse_timeout_closes_a_silent_connection_like_dcmrecv(
    dcmtk_dcmrecv: str, cfg: Path
) -> None:
    for binary in (DCMTK, OURS):
        with receiver(binary, ["-xf", str(cfg), "Store", "-ta", "1"], []) as port:
            with socket.create_connection((LOCALHOST, port)) as silent:
                assert _closed_by_peer(silent), binary
            # The receiver keeps serving.
            associate(port, [dicomgen.CT]).release()


def test_dimse_timeout_aborts_an_idle_association_like_dcmrecv(
    dcmtk_dcmrecv: str, cfg: Path
) -> None:
    for binary in (DCMTK, OURS):
        with receiver(binary, ["-xf", str(cfg), "Store", "-td", "1"], []) as port:
            assoc = associate(port, [dicomgen.CT])
            wait_ended(assoc)
            assert not assoc.is_released, binary
            associate(port, [dicomgen.CT]).release()


# --- statuses ----------------------------------------------------------------------------


def _blocked_store(binary: str, cfg: Path, out: Path, args: list[str]) -> tuple[object, ...]:
    out.mkdir(parents=True)
    (out / "CT.1.2.3.4.100").mkdir()  # the target name is taken by a directory
    log: list[str] = []
    with receiver(binary, ["-xf", str(cfg), "Store", "-od", str(out), *args], log) as port:
        assoc = associate(port, [dicomgen.CT, dicomgen.MR])
        blocked = int(assoc.send_c_store(part10(dicomgen.CT, "1.2.3.4.100")).Status)
        if assoc.is_established:
            after = int(assoc.send_c_store(part10(dicomgen.MR, "1.2.3.4.200")).Status)
            assoc.release()
        else:
            after = -1
    errors = [line.replace(str(out), "OUT") for line in log if line.startswith("E:")]
    stored = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    return blocked, after, errors, stored


def test_unwritable_file_answers_a700_and_goes_on_like_dcmrecv(
    dcmtk_dcmrecv: str, cfg: Path, tmp_path: Path
) -> None:
    theirs = _blocked_store(DCMTK, cfg, tmp_path / "t", [])
    assert theirs[:2] == (0xA700, 0x0000)
    assert _blocked_store(OURS, cfg, tmp_path / "o", []) == theirs


# --- beyond DCMTK ------------------------------------------------------------------------


def test_associations_are_served_concurrently(cfg: Path, tmp_path: Path) -> None:
    """DCMTK queues a second association until the first ends; we serve both at once."""
    with receiver(OURS, ["-xf", str(cfg), "Store", "-od", str(tmp_path)], []) as port:
        first = associate(port, [dicomgen.CT])
        second = associate(port, [dicomgen.CT])
        assert int(second.send_c_store(part10(dicomgen.CT, "1.2.3.4.2")).Status) == 0
        assert int(first.send_c_store(part10(dicomgen.CT, "1.2.3.4.1")).Status) == 0
        second.release()
        first.release()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "CT.1.2.3.4.1",
        "CT.1.2.3.4.2",
    ]


# --- log lines -----------------------------------------------------------------------------


@contextmanager
def watched(binary: str, args: list[str]) -> Iterator[tuple[int, list[str]]]:
    """`binary` serving on a free port; its stderr lines, as they come, in the list."""
    port = free_port()
    proc = subprocess.Popen(
        [binary, *args, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    lines: list[str] = []
    assert proc.stderr is not None
    stderr = proc.stderr
    reader = threading.Thread(
        target=lambda: lines.extend(line.decode(errors="replace").rstrip() for line in stderr)
    )
    reader.start()
    try:
        wait_listening(port, proc)
        yield port, lines
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE)
        reader.join(timeout=DEADLINE)


ENDINGS = {
    # how the association ends, the receiver's options
    "peer closes": ([], []),
    "peer closes mid-dataset": ([], ["dataset"]),
    "peer aborts": ([], ["abort"]),
    "peer aborts mid-dataset": ([], ["dataset", "abort"]),
    "-td passes": (["-td", "1"], ["wait"]),
    "-td passes mid-dataset": (["-td", "1"], ["dataset", "wait"]),
}
ENDING_LINES = ("Abort", "Unable to receive", "C-STORE", "E:", "W:")


def _ending(binary: str, cfg: Path, ending: str) -> list[str]:
    args, steps = ENDINGS[ending]
    with watched(binary, ["-v", "-xf", str(cfg), "Store", *args]) as (port, lines):
        peer = rawpdu.Peer(port)
        assert peer.associate(rawpdu.associate_rq(dimse.CONTEXTS, called="ANY"))
        if "dataset" in steps:
            dataset = rawpdu.explicit_dataset("1.2.3.4.40", b"\x01" * 40000)
            command = dimse.store_command("1.2.3.4.40")
            first = rawpdu.dataset_pdus(dimse.CT_CX, dataset)[0]
            peer.send(rawpdu.p_data(rawpdu.pdv(dimse.CT_CX, 0x03, command)) + first)
        if "abort" in steps:
            peer.send(rawpdu.pdu(rawpdu.ABORT, b"\0\0\0\0"))
        if "wait" in steps:  # dcmrecv sends its A-ABORT and leaves the closing to the peer
            answer = peer.read_pdu(timeout=DEADLINE)
            assert answer is not None and answer[0] == rawpdu.ABORT
        peer.close()
        if "wait" not in steps:
            deadline = time.monotonic() + DEADLINE
            while not any("Abort Request" in line for line in lines):
                assert time.monotonic() < deadline, f"{binary} logged no abort: {lines}"
                time.sleep(0.05)  # polling interval of the deadline loop
    return [line for line in lines if any(part in line for part in ENDING_LINES)]


@pytest.mark.parametrize("ending", ENDINGS)
def test_an_association_ends_with_dcmrecvs_lines(
    dcmtk_dcmrecv: str, cfg: Path, ending: str
) -> None:
    theirs = _ending(DCMTK, cfg, ending)
    assert _ending(OURS, cfg, ending) == theirs


def _max_send_pdv(binary: str, cfg: Path, peer_maximum: int) -> list[str]:
    log: list[str] = []
    with receiver(binary, ["-v", "-xf", str(cfg), "Store"], log) as port:
        peer = rawpdu.Peer(port)
        rq = rawpdu.associate_rq(dimse.CONTEXTS, called="ANY", max_pdu=peer_maximum)
        assert peer.associate(rq)
        peer.send(rawpdu.release_rq())
        assert peer.read_pdu() is not None
        peer.close()
    return [line for line in log if "PDV" in line]


@pytest.mark.parametrize("peer_maximum", [0, 4097, 262144])
def test_max_send_pdv_like_dcmrecv(dcmtk_dcmrecv: str, cfg: Path, peer_maximum: int) -> None:
    theirs = _max_send_pdv(DCMTK, cfg, peer_maximum)
    assert theirs and theirs[-1].startswith("I: Association Acknowledged")
    assert _max_send_pdv(OURS, cfg, peer_maximum) == theirs
