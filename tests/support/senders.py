"""C-STORE senders nobody on this project wrote, the objects they send, and a receiver run.

The senders are installed by scripts/peers (dcmsend by scripts/bootstrap's dcmtk). Each
`send_*` function sends every file of a list to 127.0.0.1:port and returns what the
sender itself reported.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom.data import get_testdata_file

from tests.support import dicomgen
from tests.support.net import LOCALHOST, free_port
from tests.support.paths import REPO
from tests.support.peers import wait_listening

OURS = str(Path(sys.executable).with_name("dcmrecv"))
NODE_DIR = REPO / "tests" / "senders" / "node"
CALLED = "ANY"
DEADLINE = 60.0


GENERATED = {
    "ct.dcm": dicomgen.Spec(dicomgen.CT, "1.2.3.4.100"),
    "mr.dcm": dicomgen.Spec(dicomgen.MR, "1.2.3.4.200", series_date=None),
    "private.dcm": dicomgen.PRIVATE[0],
}
# pydicom's bundled test files (no download), one per transfer syntax or kind.
BUNDLED = (
    "CT_small.dcm",  # Explicit VR Little Endian, private GE tags
    "MR_small_implicit.dcm",  # Implicit VR Little Endian
    "SC_rgb_small_odd_big_endian.dcm",  # Explicit VR Big Endian
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless SV1
    "image_dfl.dcm",  # Deflated Explicit VR Little Endian (odd-length deflated stream)
    "reportsi.dcm",  # Basic Text SR
    "test-SR.dcm",  # Comprehensive SR
)
PRIVATE_FILE = "private.dcm"
DEFLATED_FILE = "image_dfl.dcm"


def write_objects(directory: Path) -> list[Path]:
    """The test objects, each with its own SOP Instance UID, as files in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [dicomgen.write(spec, directory / name) for name, spec in GENERATED.items()]
    for name in BUNDLED:
        source = get_testdata_file(name)
        assert isinstance(source, str), f"pydicom does not bundle {name}"
        paths.append(Path(shutil.copyfile(source, directory / name)))
    return sorted(paths)


def dcmtk_dcmrecv() -> str:
    """DCMTK's dcmrecv, also where dcmrecvd's package has diverted it."""
    found = subprocess.run(
        ["dpkg-divert", "--truename", "/usr/bin/dcmrecv"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found).is_file(), f"DCMTK's dcmrecv ({found}) is missing: run scripts/bootstrap"
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=False)
    assert version.stdout.startswith("$dcmtk: dcmrecv"), f"{found} is not DCMTK's dcmrecv"
    return found


def missing_senders() -> list[str]:
    """The senders that scripts/peers (or scripts/bootstrap, for dcmsend) did not install."""
    tools = {name: shutil.which(name) for name in ("dcmsend", "gdcmscu", "node")}
    tools["Orthanc"] = shutil.which("Orthanc", path="/usr/sbin:/usr/bin")
    missing = [name for name, path in tools.items() if path is None]
    if not (NODE_DIR / "node_modules" / "dcmjs-dimse").is_dir():
        missing.append("dcmjs-dimse")
    return missing


@dataclass(frozen=True)
class Sent:
    """What a sender reported: per file name the C-STORE status it saw (None: it does not
    tell), and its exit codes (gdcmscu: none; Orthanc: HTTP status, instances sent, instances
    failed)."""

    statuses: dict[str, int | None]
    codes: tuple[int, ...]


Sender = Callable[[int, list[Path], Path], Sent]


def _run(args: list[str], log: Path) -> int:
    with log.open("ab") as out:
        return subprocess.run(
            args, stdout=out, stderr=subprocess.STDOUT, timeout=DEADLINE, check=False
        ).returncode


def send_dcmsend(port: int, files: list[Path], work: Path) -> Sent:
    """DCMTK's dcmsend with its defaults (+dls: lossless data may go decompressed), one
    association for the batch; -nh so that one refused object does not stop the rest."""
    report = work / "dcmsend-report.txt"
    args = ["dcmsend", "-aet", "DCMSEND", "-aec", CALLED, "-nh", "+crf", str(report)]
    code = _run([*args, LOCALHOST, str(port), *map(str, files)], work / "dcmsend.log")
    return Sent(dcmsend_statuses(report.read_text()), (code,))


def dcmsend_statuses(report: str) -> dict[str, int | None]:
    """File name -> DIMSE status from a dcmsend --create-report-file report."""
    statuses: dict[str, int | None] = {}
    name = ""
    for line in report.splitlines():
        key, _, value = line.partition(" : ")
        if key.startswith("Filename"):
            name = Path(value.strip()).name
            statuses[name] = None
        elif key.startswith("DIMSE Status") and name:
            statuses[name] = int(value.split()[0], 16)
    return statuses


def send_gdcmscu(port: int, files: list[Path], work: Path) -> Sent:
    """GDCM's gdcmscu, one call (one association) per file. It prints no status we can rely
    on, and its exit code says nothing either: it dies with SIGABRT after every release (its
    own bug). So it reports nothing here; judge it by the files and the receiver's log."""
    for path in files:
        args = ["gdcmscu", "--store", "--aetitle", "GDCMSCU", "--call", CALLED]
        _run([*args, LOCALHOST, str(port), "-i", str(path)], work / "gdcmscu.log")
    return Sent({path.name: None for path in files}, ())


def send_dcmjs(port: int, files: list[Path], work: Path) -> Sent:
    """dcmjs-dimse (npm) through tests/senders/node/send.js, one association per file."""
    args = ["node", str(NODE_DIR / "send.js"), LOCALHOST, str(port), "DCMJS", CALLED]
    with (work / "dcmjs.log").open("ab") as err:
        done = subprocess.run(
            [*args, *map(str, files)],
            stdout=subprocess.PIPE,
            stderr=err,
            timeout=DEADLINE,
            check=False,
        )
    statuses: dict[str, int | None] = {}
    for line in done.stdout.decode().splitlines():
        outcome = json.loads(line)
        statuses[Path(outcome["file"]).name] = outcome["status"]
    return Sent(statuses, (done.returncode,))


def send_pynetdicom(port: int, files: list[Path], work: Path) -> Sent:
    """pynetdicom's storescu app, one association for the batch."""
    log = work / "storescu.log"
    args = [sys.executable, "-m", "pynetdicom", "storescu", "-v", "-cx"]
    args += ["-aet", "STORESCU", "-aec", CALLED, LOCALHOST, str(port)]
    code = _run([*args, *map(str, files)], log)
    return Sent(storescu_statuses(log.read_text()), (code,))


def storescu_statuses(log: str) -> dict[str, int | None]:
    """File name -> status from pynetdicom storescu's verbose log."""
    statuses: dict[str, int | None] = {}
    name = ""
    for line in log.splitlines():
        if sending := re.match(r"I: Sending file: (.*)$", line):
            name = Path(sending[1]).name
            statuses[name] = None
        elif response := re.match(r"I: Received Store Response \(Status: 0x([0-9A-Fa-f]{4})", line):
            statuses[name] = int(response[1], 16)
    return statuses


def dataset_part(path: Path) -> bytes:
    """What follows a Part-10 file's File Meta group, read without decoding the dataset
    (which may not decode: see the botched deflated data in test_senders_interop.py)."""
    raw = path.read_bytes()
    # 128-byte preamble, "DICM", then (0002,0000) UL 4 as Explicit VR Little Endian.
    assert raw[128:132] == b"DICM" and raw[132:138] == b"\x02\x00\x00\x00UL", path
    return raw[144 + int.from_bytes(raw[140:144], "little") :]


@dataclass(frozen=True)
class Received:
    """One receiver's side of a push: the files it stored (by name) and its log."""

    files: dict[str, Path]
    sent: Sent
    log: list[str]


def receive(
    binary: str, args: list[str], cfg: Path, work: Path, send: Callable[[int], Sent]
) -> Received:
    """Start `binary` (a dcmrecv) with `args`, run `send` against it, stop it."""
    out = work / "out"
    out.mkdir(parents=True)
    port = free_port()
    log = work / "receiver.log"
    command = [binary, "-v", "-xf", str(cfg), "Senders", "-od", str(out), *args, str(port)]
    # DCMTK waits out Nagle's delay on every small PDU without it.
    env = dict(os.environ, TCP_NODELAY="1")
    with log.open("wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            wait_listening(port, proc)
            sent = send(port)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=DEADLINE)
    files = {str(p.relative_to(out)): p for p in sorted(out.rglob("*")) if p.is_file()}
    return Received(files, sent, log.read_text(errors="replace").splitlines())


class Orthanc:
    """Orthanc as a plain process on a free HTTP port, its storage in `root`; with
    `dicom_port`, its DICOM server listens there too (as the AE ORTHANC)."""

    def __init__(self, root: Path, dicom_port: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://{LOCALHOST}:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "orthanc.json"
        config = {
            "Name": "dcmrecvd-test",
            "StorageDirectory": str(root / "db"),
            "IndexDirectory": str(root / "db"),
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            # It only sends here, unless it takes Storage Commitment reports too.
            "DicomServerEnabled": dicom_port is not None,
            **({"DicomPort": dicom_port} if dicom_port is not None else {}),
            "DicomAet": "ORTHANC",
            "DicomScuTimeout": 30,
        }
        self.config.write_text(json.dumps(config))
        self.log = root / "orthanc.log"

    @contextmanager
    def running(self) -> Iterator[Orthanc]:
        binary = shutil.which("Orthanc", path="/usr/sbin:/usr/bin")
        assert binary is not None, "Orthanc is missing: run scripts/peers"
        with self.log.open("wb") as log:
            proc = subprocess.Popen([binary, str(self.config)], stdout=log, stderr=log)
            try:
                self._wait_answering(proc)
                yield self
            finally:
                proc.terminate()
                proc.wait(timeout=DEADLINE)

    def _wait_answering(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {proc.returncode}: see {self.log}")
            try:
                self.call("GET", "/system")
                return
            except OSError:
                time.sleep(0.1)  # polling interval of the deadline loop
        raise TimeoutError(f"Orthanc does not answer on {self.url} after {DEADLINE} s")

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, object]:
        """One REST request: the HTTP status and the decoded JSON answer."""
        request = urllib.request.Request(self.url + path, data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=DEADLINE) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def upload(self, files: list[Path]) -> list[str]:
        """POST each file to /instances; their Orthanc IDs."""
        ids = []
        for path in files:
            status, answer = self.call("POST", "/instances", path.read_bytes())
            assert status == 200 and isinstance(answer, dict), (path, status, answer)
            ids.append(str(answer["ID"]))
        return ids

    def store(self, port: int, ids: list[str]) -> Sent:
        """Point the modality `receiver` at `port` and C-STORE `ids` there, synchronously."""
        modality = {"AET": CALLED, "Host": LOCALHOST, "Port": port}
        status, _ = self.call("PUT", "/modalities/receiver", json.dumps(modality).encode())
        assert status == 200, status
        job = json.dumps({"Resources": ids, "Synchronous": True}).encode()
        status, answer = self.call("POST", "/modalities/receiver/store", job)
        counts = answer if isinstance(answer, dict) else {}
        failed = int(counts.get("FailedInstancesCount", -1))
        return Sent({}, (status, int(counts.get("InstancesCount", -1)), failed))
