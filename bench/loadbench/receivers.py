"""The receivers under test, how each is started, and one running receiver's life.

Every receiver gets the same negotiation (DCMTK's /etc/dcmtk/storescp.cfg, profile
"Default"), max PDU 131072, 127.0.0.1, and TCP_NODELAY=1 in its environment (Debian's
DCMTK leaves Nagle's algorithm on without it and stalls about 40 ms per C-STORE).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import proctree, ulclient
from .ports import free_port, listening
from .ulclient import TlsFiles

ASCONFIG = Path("/etc/dcmtk/storescp.cfg")
PDU = 131072
# dcmrecvd's default [receiver] max-associations.
DCMRECVD_MAX_ASSOCIATIONS = 64

DCMRECVD_CONFIG = """\
[receiver]
port = {port}
bind-address = 127.0.0.1
output-directory = {outdir}
max-pdu = {pdu}
profile = bench
{extra}
[profile bench]
asconfig = {asconfig}
asconfig-profile = Default

[logging]
destination = stderr
level = warn
"""

DCMRECVD_TLS = """
[tls]
port = {port}
private-key = {key}
certificate = {certificate}
ca-certificates = {certificate}
peer-certificate = require
"""


def dcmrecvd_config(
    port: int,
    outdir: Path,
    *,
    pdu: int = PDU,
    workers: int | None = None,
    max_associations: int | None = None,
    tls: TlsFiles | None = None,
    tls_port: int = 0,
    ini: str = "",
) -> str:
    """dcmrecvd's INI file: fsync on and default workers unless told, DCMTK's profile.

    `ini`: more of it; its lines before the first [section] go into [receiver], the rest
    at the end (an index and [completion], say).
    """
    extra = "".join(
        f"{key} = {value}\n"
        for key, value in (("workers", workers), ("max-associations", max_associations))
        if value is not None
    )
    head, _, tail = ("\n" + ini).partition("\n[")
    extra += head.strip() + "\n" if head.strip() else ""
    text = DCMRECVD_CONFIG.format(port=port, outdir=outdir, pdu=pdu, extra=extra, asconfig=ASCONFIG)
    if tls is not None:
        text += DCMRECVD_TLS.format(port=tls_port, key=tls.key, certificate=tls.certificate)
    return text + ("\n[" + tail if tail else "")


@dataclass(frozen=True)
class Launch:
    """Where a run's receiver listens and writes."""

    port: int
    outdir: Path
    workdir: Path
    associations: int
    tls: TlsFiles | None


@dataclass(frozen=True)
class Receiver:
    """A receiver program and how to start it.

    `program` is "dcmrecvd" (the daemon at `binary`), "dcmrecv" or "storescp" (DCMTK's,
    storescp with --fork); `serial` ones serve one association at a time, so the latency
    probe's association could only be served after the load and is not sent.
    """

    name: str
    program: str
    binary: Path
    bit_preserving: bool = False
    serial: bool = False
    # dcmrecvd: INI text added to its configuration; {workdir} is the run's directory,
    # {free_port} a port free when the run starts (for [metrics]).
    ini: str = ""

    def command(self, launch: Launch) -> list[str]:
        if self.program == "dcmrecvd":
            return self._dcmrecvd(launch)
        argv = [str(self.binary)]
        if self.program == "storescp":
            argv.append("--fork")
        argv += ["-xf", str(ASCONFIG), "Default", "-od", str(launch.outdir), "-pdu", str(PDU)]
        if self.bit_preserving:
            argv.append("+B")
        if launch.tls is not None:
            argv += ["+tls", str(launch.tls.key), str(launch.tls.certificate)]
            argv += ["+cf", str(launch.tls.certificate)]
        return [*argv, str(launch.port)]

    def _dcmrecvd(self, launch: Launch) -> list[str]:
        # The probe is one association more than the load; dcmrecvd refuses any beyond
        # max-associations, so only a load that leaves no room for it raises the limit.
        needed = launch.associations + 1
        limit = needed if needed > DCMRECVD_MAX_ASSOCIATIONS else None
        ini = self.ini.replace("{workdir}", str(launch.workdir))
        ini = ini.replace("{free_port}", str(free_port()))
        if launch.tls is None:
            text = dcmrecvd_config(launch.port, launch.outdir, max_associations=limit, ini=ini)
        else:
            # The plain listener must have a port too; nothing is sent to it.
            text = dcmrecvd_config(
                free_port(),
                launch.outdir,
                max_associations=limit,
                tls=launch.tls,
                tls_port=launch.port,
                ini=ini,
            )
        config = launch.workdir / "dcmrecvd.conf"
        config.write_text(text)
        return [str(self.binary), "--config", str(config)]


def dcmrecvd(venv_bin: Path | None = None, name: str = "dcmrecvd", ini: str = "") -> Receiver:
    """The daemon of a virtual environment (default: the one running this)."""
    directory = venv_bin if venv_bin is not None else Path(sys.executable).parent
    return Receiver(name, "dcmrecvd", directory / "dcmrecvd", ini=ini)


DCMRECV = Receiver("dcmrecv", "dcmrecv", Path("/usr/bin/dcmrecv"), serial=True)
DCMRECV_BIT_PRESERVING = Receiver(
    "dcmrecv +B", "dcmrecv", Path("/usr/bin/dcmrecv"), bit_preserving=True, serial=True
)
STORESCP = Receiver("storescp --fork", "storescp", Path("/usr/bin/storescp"))


@dataclass
class Started:
    """A receiver that runs, and how long it took to listen and to answer a C-ECHO."""

    process: subprocess.Popen[bytes]
    port: int
    argv: list[str]
    log: Path
    listen_s: float
    echo_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def tree_cpu(self) -> tuple[float, float]:
        return proctree.tree_cpu(self.pid)

    def log_tail(self, size: int = 1500) -> str:
        with open(self.log, "rb") as log:
            log.seek(max(0, self.log.stat().st_size - size))
            return log.read().decode(errors="replace")

    def stop(self, grace: float = 30) -> int:
        """SIGTERM to its whole session, SIGKILL after `grace` s; its exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            code = self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.notes.append(f"did not stop within {grace} s of SIGTERM: killed")
            code = -signal.SIGKILL
        with contextlib.suppress(ProcessLookupError):
            # What is left of its session (storescp --fork's children).
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait()
        return code


def start(receiver: Receiver, launch: Launch, log: Path, timeout: float = 60) -> Started:
    """Start `receiver` in a session of its own; return once a C-ECHO succeeds."""
    argv = receiver.command(launch)
    env = {**os.environ, "TCP_NODELAY": "1"}
    begin = time.monotonic()
    with open(log, "wb") as output:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    deadline = begin + timeout
    listen_s = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{receiver.name} exited with {process.returncode} before answering:"
                f" {log.read_text(errors='replace')[-1500:]}"
            )
        if listen_s is None and listening(launch.port):
            listen_s = time.monotonic() - begin
        if listen_s is not None and ulclient.echo(launch.port, launch.tls):
            return Started(process, launch.port, argv, log, listen_s, time.monotonic() - begin)
        time.sleep(0.005)  # polling interval of the deadline loop
    process.kill()
    process.wait()
    raise RuntimeError(f"{receiver.name} did not answer a C-ECHO within {timeout} s")
