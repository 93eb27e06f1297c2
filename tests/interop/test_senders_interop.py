"""Foreign senders side by side: DCMTK's dcmrecv and ours receive the same objects from
senders nobody on this project wrote (DCMTK's dcmsend, GDCM's gdcmscu, the npm package
dcmjs-dimse, pynetdicom's storescu app, Orthanc through its REST API). Compared: what the
sender was told (Success or not), what the receiver logged, the file names, and the bytes.

Every expectation is what DCMTK's dcmrecv does in the same run. scripts/peers installs the
senders (scripts/test runs it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.support import senders
from tests.support.asconfigs import SENDERS_CFG
from tests.support.senders import DEFLATED_FILE, PRIVATE_FILE, Orthanc, Received, Sent, dataset_part
from tests.support.streaming_peer import meta_of

pytestmark = pytest.mark.interop

SENDERS: dict[str, senders.Sender] = {
    "dcmsend": senders.send_dcmsend,
    "gdcmscu": senders.send_gdcmscu,
    "dcmjs-dimse": senders.send_dcmjs,
    "pynetdicom-storescu": senders.send_pynetdicom,
}
ALL = [*SENDERS, pytest.param("orthanc", marks=pytest.mark.slow)]
MODES = {"normal": [], "bit-preserving": ["+B"]}
# The senders that botch the deflated object: test_botched_deflated_data_as_dcmrecv.
BOTCHED = ("gdcmscu", "dcmjs-dimse")
META = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")


@dataclass(frozen=True)
class Workspace:
    root: Path
    cfg: Path
    objects: list[Path]
    dcmtk: str


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    if missing := senders.missing_senders():
        pytest.fail(f"missing senders: {', '.join(missing)}: run scripts/peers")
    root = tmp_path_factory.mktemp("senders")
    cfg = root / "senders.cfg"
    cfg.write_text(SENDERS_CFG)
    return Workspace(root, cfg, senders.write_objects(root / "objects"), senders.dcmtk_dcmrecv())


@pytest.fixture(scope="module")
def orthanc(workspace: Workspace) -> Iterator[tuple[Orthanc, list[str]]]:
    """A running Orthanc holding every test object, and their Orthanc IDs."""
    server = Orthanc(workspace.root / "orthanc")
    with server.running():
        yield server, server.upload(workspace.objects)


def sent_files(sender: str, objects: list[Path]) -> list[Path]:
    return [p for p in objects if sender not in BOTCHED or p.name != DEFLATED_FILE]


class Pushes:
    """Each (sender, receiver, mode) push once per module, run when first asked for."""

    def __init__(self, workspace: Workspace, request: pytest.FixtureRequest) -> None:
        self.workspace = workspace
        self.request = request
        self.done: dict[tuple[str, str, str], Received] = {}

    def __call__(self, sender: str, receiver: str, mode: str) -> Received:
        key = (sender, receiver, mode)
        if key not in self.done:
            ws = self.workspace
            work = ws.root / "runs" / sender / receiver / mode
            work.mkdir(parents=True)
            binary = ws.dcmtk if receiver == "dcmtk" else senders.OURS
            send = self.sending(sender, work)
            self.done[key] = senders.receive(binary, MODES[mode], ws.cfg, work, send)
        return self.done[key]

    def sending(self, sender: str, work: Path) -> Callable[[int], Sent]:
        if sender == "orthanc":
            running: tuple[Orthanc, list[str]] = self.request.getfixturevalue("orthanc")
            server, ids = running

            def store(port: int) -> Sent:
                return server.store(port, ids)

            return store
        files = sent_files(sender, self.workspace.objects)

        def send(port: int) -> Sent:
            return SENDERS[sender](port, files, work)

        return send


@pytest.fixture(scope="module")
def pushes(workspace: Workspace, request: pytest.FixtureRequest) -> Pushes:
    return Pushes(workspace, request)


def responses(log: list[str]) -> list[str]:
    """The receiver's associations, C-STORE answers and stored files, in order, without the
    folder. DCMTK logs wait_listening's bare TCP probe as an association from " -> ": not kept."""
    kept = re.compile(
        r"I: (Association Received \S+: \S+ -> |Received Association Release Request"
        r"|Sending C-STORE Response|Stored received object to file)"
    )
    return [re.sub(r"file: .*/", "file: ", line) for line in log if kept.match(line)]


def check_what_dcmtk_did(sender: str, theirs: Received, objects: list[Path]) -> None:
    """What this sender does with DCMTK's dcmrecv: the facts the comparison rests on."""
    files = sent_files(sender, objects)
    everything: dict[str, int | None] = {p.name: 0 for p in files}
    if sender == "gdcmscu":
        # It dies at setup, before any association, for a SOP class its dictionary does not
        # know: the private class is never sent.
        associations = [line for line in theirs.log if "Received localhost: GDCMSCU" in line]
        assert len(associations) == len(files) - 1
        assert len(theirs.files) == len([p for p in files if p.name != PRIVATE_FILE])
        assert not any(name.startswith("UNKNOWN.") for name in theirs.files)
    elif sender == "orthanc":
        assert theirs.sent.codes == (200, len(files), 0)
        assert len(theirs.files) == len(files)
    else:
        assert theirs.sent == Sent(everything, (0,))
        assert len(theirs.files) == len(files)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sender", ALL)
def test_same_success_and_names_as_dcmrecv(
    pushes: Pushes, workspace: Workspace, sender: str, mode: str
) -> None:
    theirs, ours = pushes(sender, "dcmtk", mode), pushes(sender, "ours", mode)
    check_what_dcmtk_did(sender, theirs, workspace.objects)
    assert responses(theirs.log), "DCMTK's dcmrecv logged no C-STORE"
    assert sorted(ours.files) == sorted(theirs.files)
    assert ours.sent == theirs.sent
    assert responses(ours.log) == responses(theirs.log)


@pytest.mark.parametrize("sender", ALL)
def test_normal_mode_data_as_dcmrecv(pushes: Pushes, sender: str) -> None:
    theirs, ours = pushes(sender, "dcmtk", "normal"), pushes(sender, "ours", "normal")
    arrived = pushes(sender, "dcmtk", "bit-preserving")
    assert theirs.files and sorted(ours.files) == sorted(theirs.files) == sorted(arrived.files)
    for name, path in ours.files.items():
        assert meta_of(path, *META) == meta_of(theirs.files[name], *META), name
        # DCMTK re-encodes (sequence lengths, padding); the data are the same ...
        assert dcmread(path) == dcmread(theirs.files[name]), name
        # ... and ours are the bytes that came off the wire, as DCMTK's +B keeps them.
        assert dataset_part(path) == dataset_part(arrived.files[name]), name


@pytest.mark.parametrize("sender", ALL)
def test_bit_preserving_bytes_as_dcmrecv(pushes: Pushes, sender: str) -> None:
    theirs = pushes(sender, "dcmtk", "bit-preserving")
    ours = pushes(sender, "ours", "bit-preserving")
    assert theirs.files and sorted(ours.files) == sorted(theirs.files)
    for name, path in ours.files.items():
        assert dataset_part(path) == dataset_part(theirs.files[name]), name
        keys = (*META, "SourceApplicationEntityTitle")
        assert meta_of(path, *keys) == meta_of(theirs.files[name], *keys), name


# Deflated data that a sender botches, and what each receiver does with them.
# gdcmscu sends image_dfl.dcm's odd-length deflated stream as it is: DCMTK refuses it (DIMSE:
# Odd Fragment Length); ours stores it, since it inflates whole and reads back (a near-miss
# that docs/validation.md accepts). dcmjs-dimse sends it as plain Explicit VR Little Endian on
# a Deflated context: DCMTK refuses it in normal mode (ZLib Error) and stores it unread in +B;
# ours refuses it in both modes (0xC000: it does not inflate) and the association goes on.
STORES = "stores"
REFUSES = "refuses"
ABORTS = "aborts"


@pytest.mark.parametrize(
    ("sender", "mode", "expected"),
    [
        ("gdcmscu", "normal", (ABORTS, STORES)),
        ("gdcmscu", "bit-preserving", (ABORTS, STORES)),
        ("dcmjs-dimse", "normal", (ABORTS, REFUSES)),
        ("dcmjs-dimse", "bit-preserving", (STORES, REFUSES)),
    ],
)
def test_botched_deflated_data_as_dcmrecv(
    workspace: Workspace, tmp_path: Path, sender: str, mode: str, expected: tuple[str, str]
) -> None:
    dcmtk, ours_do = expected
    (deflated,) = [p for p in workspace.objects if p.name == DEFLATED_FILE]
    runs = []
    for binary, name in ((workspace.dcmtk, "dcmtk"), (senders.OURS, "ours")):
        work = tmp_path / name
        work.mkdir()

        def send(port: int, work: Path = work) -> Sent:
            return SENDERS[sender](port, [deflated], work)

        runs.append(senders.receive(binary, MODES[mode], workspace.cfg, work, send))
    theirs, ours = runs
    if dcmtk == ABORTS:
        assert theirs.files == {}
        assert any(line.startswith("E: Unable to receive C-STORE dataset") for line in theirs.log)
        assert theirs.sent.statuses[DEFLATED_FILE] is None
    else:
        assert len(theirs.files) == 1 and theirs.sent.statuses[DEFLATED_FILE] == 0
    if ours_do == REFUSES:
        assert ours.files == {}
        assert ours.sent.statuses[DEFLATED_FILE] == 0xC000
        assert any("malformed dataset" in line for line in ours.log)
    else:
        # gdcmscu reports no status: the receiver's log says what it answered.
        assert any("C-STORE Response (Success)" in line for line in ours.log)
        (stored,) = ours.files.values()
        assert dcmread(stored).PixelData  # it inflates and reads back whole
