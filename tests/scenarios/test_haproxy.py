"""Scale-out behind HAProxy (issue 19): Debian's HAProxy runs the shipped example,
etc/haproxy/dcmrecvd.cfg, on 127.0.0.1 in front of two real dcmrecvd daemons on
127.0.0.2 and 127.0.0.3 that share one output directory. Senders go through it while
a node is killed, stopped (wedged: its port accepts TCP, nothing answers) or drained;
the example's DICOM health check takes the node out and brings it back.

Checks run every INTER here (the shipped 2 s would make these tests slow); fall, rise
and timeout check are the shipped ones. The example runs as shipped, send-proxy-v2
included, and the nodes require the PROXY protocol from 127.0.0.1, HAProxy's address:
the health checks arrive as v2 LOCAL connections, the modalities' associations with
their real addresses (two modalities in network namespaces of their own, for the
address rules; root only, as HAProxy's chroot already is).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from dcmrecvd.store.storage import SPOOL_DIRECTORY
from tests.support import dicomgen, netns, streaming_peer
from tests.support.daemon import DCMRECVD, Daemon, conf, dcmrecvd
from tests.support.haproxy import NODES, Address, HAProxy, haproxy
from tests.support.net import LOCALHOST
from tests.support.senders import dataset_part
from tests.support.waiting import until

pytestmark = pytest.mark.slow

INTER = 0.5
# As in the shipped example.
FALL = RISE = 2
TIMEOUT_CHECK = 2.0
# What a loaded 2-core machine may add to HAProxy's own schedule.
SLACK = 3.0
ADDRESSES = dict(zip(NODES, ("127.0.0.2", "127.0.0.3"), strict=True))
AETITLE = "DCMRECVD"
# How a node logs an association of the example's health check.
CHECK = "HAPROXY-CHECK -> DCMRECVD"
# Pixel data per object: a push of 400 takes seconds, time enough to kill a node in it.
PIXELS = 64 * 1024
DEADLINE = 60.0


def write_set(directory: Path, count: int) -> dict[str, Path]:
    """`count` CT instances with PIXELS bytes of pixel data, as Part-10 files, by SOP
    Instance UID."""
    directory.mkdir()
    files = {}
    for i in range(1, count + 1):
        uid = f"1.2.3.19.{i}"
        path = directory / f"{i:04d}.dcm"
        streaming_peer.dataset(uid, pixel_bytes=PIXELS).save_as(path, enforce_file_format=True)
        files[uid] = path
    return files


def stored(out: Path) -> dict[str, Path]:
    """The objects under their final names in the shared output directory, by SOP
    Instance UID."""
    found = {}
    for path in out.rglob("*"):
        if path.is_file() and SPOOL_DIRECTORY not in path.relative_to(out).parts:
            uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            found[uid] = path
    return found


def assert_intact(out: Path, sent: dict[str, Path]) -> dict[str, Path]:
    """Every object under a final name is whole: its dataset the bytes that were sent."""
    found = stored(out)
    assert set(found) <= set(sent), set(found) - set(sent)
    for uid, path in found.items():
        assert dataset_part(path) == dataset_part(sent[uid]), f"{path} differs from what was sent"
    return found


@dataclass
class Cluster:
    """Two nodes, each a dcmrecvd in a process group of its own (to kill or stop it
    whole, workers included), and HAProxy in front."""

    tmp: Path
    out: Path
    ports: dict[str, int]
    stack: ExitStack
    # More of each node's configuration: [receiver] keys, and sections after it.
    receiver: dict[str, str] = field(default_factory=dict)
    extra: str = ""
    nodes: dict[str, Daemon] = field(default_factory=dict)
    homes: dict[str, Path] = field(default_factory=dict)
    proxy: HAProxy | None = None

    def start(self, name: str, home: str) -> None:
        """Node `name` in directory tmp/`home` (a new one for a restart), until READY=1."""
        directory = self.tmp / home
        directory.mkdir()
        text = conf(
            self.ports[name],
            self.out,
            self.extra.replace("{home}", str(directory)),
            bind_address=ADDRESSES[name],
            aetitle=AETITLE,
            check_called_aetitle="yes",
            workers="1",
            proxy_protocol="required",
            trusted_proxies=LOCALHOST,
            **self.receiver,
        )
        # setsid execs dcmrecvd as the leader of a new process group.
        daemon = self.stack.enter_context(dcmrecvd(directory, text, prefix=["setsid"]))
        self.nodes[name] = daemon
        self.homes[name] = directory

    def log(self, name: str) -> str:
        """What node `name` has logged so far (tests.support.daemon's stderr file)."""
        return (self.homes[name] / "stderr.log").read_text()

    @property
    def haproxy(self) -> HAProxy:
        assert self.proxy is not None
        return self.proxy

    def signal(self, name: str, signum: signal.Signals) -> None:
        """`signum` to node `name`'s whole process group."""
        os.killpg(self.nodes[name].proc.pid, signum)

    def totals(self) -> dict[str, int]:
        """The connections HAProxy has relayed to each node."""
        return {name: server.total for name, server in self.haproxy.servers().items()}

    def other(self, name: str) -> str:
        [other] = set(NODES) - {name}
        return other


@contextmanager
def cluster(
    tmp_path: Path,
    *,
    receiver: dict[str, str] | None = None,
    extra: str = "",
    listen: tuple[str, ...] = (LOCALHOST,),
) -> Iterator[Cluster]:
    """The two nodes and HAProxy (on `listen`'s addresses), both nodes UP; `receiver`
    and `extra` add to each node's configuration ("{home}" in `extra`: its directory)."""
    out = tmp_path / "out"
    out.mkdir()
    ports = {name: free_port_on(ADDRESSES[name]) for name in NODES}
    with ExitStack() as stack:
        nodes = Cluster(tmp_path, out, ports, stack, receiver or {}, extra)
        for name in NODES:
            nodes.start(name, name)
        first, second = ((ADDRESSES[name], ports[name]) for name in NODES)
        inter = f"{int(INTER * 1000)}ms"
        nodes.proxy = stack.enter_context(
            haproxy(
                tmp_path, (first, second), check_inter=inter, proxy_protocol=True, listen=listen
            )
        )
        for name in NODES:
            nodes.haproxy.wait_state(name, "UP")
        yield nodes


def free_port_on(address: str) -> int:
    """A TCP port that nothing listens on right now at `address` (of 127.0.0.0/8)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


def storescu_argv(address: Address, files: list[Path]) -> list[str]:
    return [
        *("storescu", "-v", "-aet", "MODALITY", "-aec", AETITLE, address[0], str(address[1])),
        *map(str, files),
    ]


def storescu(address: Address, files: list[Path]) -> int:
    """DCMTK's storescu sends `files` in one association; the Success responses it got."""
    run = subprocess.run(
        storescu_argv(address, files),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    return successes(output)


def successes(output: str) -> int:
    return len(re.findall(r"Received Store Response \(Success\)", output))


def home_of(nodes: Cluster, files: list[Path]) -> str:
    """The node that HAProxy sends 127.0.0.1's associations to, found by sending `files`."""
    before = nodes.totals()
    assert storescu(nodes.haproxy.address, files) == len(files)
    after = nodes.totals()
    [home] = [name for name in NODES if after[name] > before[name]]
    return home


class Push(threading.Thread):
    """pynetdicom sends files in one association, one C-STORE at a time, and records
    each one's status until one gets no response (None)."""

    def __init__(self, address: Address, files: dict[str, Path]) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.files = files
        self.statuses: dict[str, int | None] = {}

    def run(self) -> None:
        ae = AE(ae_title="MODALITY")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(dicomgen.CT, ExplicitVRLittleEndian)
        assoc = ae.associate(*self.address, ae_title=AETITLE)
        try:
            for uid, path in self.files.items():
                answer = assoc.send_c_store(path)
                self.statuses[uid] = int(answer.Status) if "Status" in answer else None
                # No response: the association is gone, and a modality stops and retries
                # later (pynetdicom would wait out its DIMSE timeout on the next one).
                if self.statuses[uid] is None:
                    break
        finally:
            if assoc.is_established:
                assoc.release()
            ae.shutdown()

    def succeeded(self) -> set[str]:
        return {uid for uid, status in list(self.statuses.items()) if status == 0}


def test_storescu_through_haproxy_stores_the_set_and_drain_moves_new_associations(
    tmp_path: Path,
) -> None:
    files = write_set(tmp_path / "set", 30)
    with cluster(tmp_path) as nodes:
        home = home_of(nodes, list(files.values()))
        assert assert_intact(nodes.out, files).keys() == files.keys()

        # Drained (as the example suggests before upgrading a node), the home node gets
        # no new association; ready again, it gets them back.
        nodes.haproxy.command(f"set server dcmrecvd/{home} state drain")
        assert home_of(nodes, list(files.values())[:3]) == nodes.other(home)
        nodes.haproxy.command(f"set server dcmrecvd/{home} state ready")
        assert home_of(nodes, list(files.values())[:3]) == home
        assert assert_intact(nodes.out, files).keys() == files.keys()

        # Every check is an association that HAProxy releases, as every storescu run's
        # is; none is aborted. A node sees one check at a time: one may be under way.
        for name in NODES:

            def checked(node: str = name) -> bool:
                return nodes.log(node).count(CHECK) >= 3

            until(checked, f"three checks of {name}")
            log = nodes.log(name)
            associations = log.count(CHECK) + log.count("MODALITY -> DCMRECVD")
            assert log.count("Received Association Release Request") >= associations - 1, log
            assert "Abort" not in log, log


def test_a_node_killed_in_a_push_leaves_the_pool_and_the_retry_goes_to_the_other(
    tmp_path: Path,
) -> None:
    files = write_set(tmp_path / "set", 400)
    with cluster(tmp_path) as nodes:
        address = nodes.haproxy.address
        push = Push(address, files)
        push.start()
        until(lambda: len(push.succeeded()) >= 20, "20 objects stored", DEADLINE)
        [victim] = [name for name, server in nodes.haproxy.servers().items() if server.current]
        nodes.signal(victim, signal.SIGKILL)
        killed = time.monotonic()
        nodes.haproxy.wait_state(victim, "DOWN", DEADLINE)
        down = time.monotonic() - killed
        push.join(DEADLINE)
        assert not push.is_alive()

        # Every Success is on the shared storage, whole; the push was cut short.
        succeeded = push.succeeded()
        assert 20 <= len(succeeded) < len(files), push.statuses
        found = assert_intact(nodes.out, files)
        assert succeeded <= found.keys()
        # Two failed checks, INTER apart; a refused connection fails one at once.
        assert down <= FALL * INTER + SLACK, f"{victim} DOWN after {down:.2f} s"

        # The sender's retry, a new association, goes to the other node and completes.
        before = nodes.totals()
        assert storescu(address, list(files.values())) == len(files)
        after = nodes.totals()
        assert after[nodes.other(victim)] == before[nodes.other(victim)] + 1
        assert after[victim] == before[victim]
        assert assert_intact(nodes.out, files).keys() == files.keys()

        # Restarted, it is UP again after RISE good checks.
        nodes.start(victim, f"{victim}-restarted")
        ready = time.monotonic()
        nodes.haproxy.wait_state(victim, "UP", DEADLINE)
        up = time.monotonic() - ready
        assert up <= RISE * INTER + SLACK, f"{victim} UP {up:.2f} s after READY=1"


def test_a_wedged_node_fails_the_dicom_check_and_comes_back(tmp_path: Path) -> None:
    files = list(write_set(tmp_path / "set", 5).values())
    with cluster(tmp_path) as nodes:
        home = home_of(nodes, files)
        nodes.signal(home, signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            # Stopped, its port still completes TCP handshakes (the kernel does them):
            # a check of the port alone would find it healthy.
            with socket.create_connection((ADDRESSES[home], nodes.ports[home]), timeout=5):
                pass
            nodes.haproxy.wait_state(home, "DOWN", DEADLINE)
            down = time.monotonic() - stopped
            # The DICOM exchange timed out (L7TOUT), not the connection (L4).
            assert nodes.haproxy.servers()[home].check_status == "L7TOUT"
            # Each failed check waits out its timeout after connecting.
            assert down <= FALL * (INTER + TIMEOUT_CHECK) + SLACK, f"DOWN after {down:.2f} s"
            assert home_of(nodes, files) == nodes.other(home)
        finally:
            nodes.signal(home, signal.SIGCONT)
        resumed = time.monotonic()
        nodes.haproxy.wait_state(home, "UP", DEADLINE)
        up = time.monotonic() - resumed
        assert up <= RISE * INTER + SLACK, f"UP {up:.2f} s after SIGCONT"
        # Consistent hashing gives 127.0.0.1 back to its node.
        assert home_of(nodes, files) == home


def test_a_connection_a_dead_node_refuses_is_redispatched_before_the_checks_notice(
    tmp_path: Path,
) -> None:
    files = list(write_set(tmp_path / "set", 5).values())
    with cluster(tmp_path) as nodes:
        home = home_of(nodes, files)
        # No check may take the node out: only option redispatch can save the association.
        nodes.haproxy.command(f"disable health dcmrecvd/{home}")
        nodes.signal(home, signal.SIGKILL)
        before = nodes.totals()
        assert storescu(nodes.haproxy.address, files) == len(files)
        after = nodes.totals()
        # Tried on the dead node first, then on the other.
        assert after == {name: count + 1 for name, count in before.items()}
        server = nodes.haproxy.servers()[home]
        assert server.redispatched == 1
        assert not server.status.startswith("DOWN"), server


def test_rules_logs_and_status_see_the_modality_not_haproxy(tmp_path: Path) -> None:
    """Two modalities in network namespaces of their own, at 198.18.1.2 and 198.18.2.2,
    send through HAProxy: a [peer] rule admits the first by its address and, with
    default-policy = reject, the second is refused, although both reach the nodes from
    HAProxy's 127.0.0.1. The health checks (PROXY v2 LOCAL) pass no rule and keep both
    nodes UP; a sender that bypasses HAProxy sends no header and is closed."""
    files = list(write_set(tmp_path / "set", 5).values())
    with ExitStack() as stack:
        allowed = stack.enter_context(netns.sender(1))
        other = stack.enter_context(netns.sender(2))
        nodes = stack.enter_context(
            cluster(
                tmp_path,
                receiver={"default_policy": "reject"},
                extra="[peer ct-a]\naddresses = 198.18.1.2\n"
                "[status]\nsocket = {home}/status.sock\n",
                listen=(LOCALHOST, allowed.gateway, other.gateway),
            )
        )
        port = nodes.haproxy.address[1]
        sent = allowed.run(storescu_argv((allowed.gateway, port), files), DEADLINE)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert successes(sent.stdout + sent.stderr) == len(files)
        refused = other.run(storescu_argv((other.gateway, port), files), DEADLINE)
        assert refused.returncode != 0
        assert "Association Rejected" in refused.stdout + refused.stderr
        logs = "".join(nodes.log(name) for name in NODES)
        assert "Association Received 198.18.1.2 (via 127.0.0.1): MODALITY -> DCMRECVD" in logs
        assert (
            "Refusing Association (calling AE title not recognized):"
            " MODALITY from 198.18.2.2: no [peer] rule matches and default-policy = reject"
        ) in logs
        # The checks still pass: both nodes UP all along.
        assert {server.status for server in nodes.haproxy.servers().values()} == {"UP"}

        # Straight to a node, without HAProxy: no header, refused, nothing guessed.
        name = NODES[0]
        direct = subprocess.run(
            storescu_argv((ADDRESSES[name], nodes.ports[name]), files[:1]),
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        assert direct.returncode != 0
        until(lambda: "no PROXY protocol header" in nodes.log(name), "the refusal logged")

        # What the status counts: the checks apart, the header error, instances by the
        # rule that admitted the real address.
        documents = [status_of(nodes.homes[node] / "status.sock") for node in NODES]
        assert all(document["proxy"]["health_checks"] > 0 for document in documents)
        assert documents[0]["proxy"]["header_errors"] == {"malformed": 1}
        instances = {
            peer: sum(d["peers"].get(peer, {}).get("instances", 0) for d in documents)
            for peer in ("ct-a", "other")
        }
        assert instances == {"ct-a": len(files), "other": 0}
        rejected = sum(d["associations"]["rejected"].get("calling-aetitle", 0) for d in documents)
        assert rejected == 1


def status_of(socket_path: Path) -> dict[str, Any]:
    run = subprocess.run(
        [DCMRECVD, "status", "--json", "--socket", str(socket_path)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    )
    document: dict[str, Any] = json.loads(run.stdout)
    return document
