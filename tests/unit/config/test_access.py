"""Access control: the rules (pure), the INI sections, and refusals on the wire."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.association import Association

from dcmrecvd.config import inifile
from dcmrecvd.config.access import AccessPolicy, Admission, PeerRule, Rejection, decide
from dcmrecvd.pnd.server import Listener, Serving
from dcmrecvd.receiver import Receiver
from tests.support.net import LOCALHOST

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
VERIFICATION = "1.2.840.10008.1.1"


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


CT01 = PeerRule("ct01", calling_aetitle="CT01", networks=(net("10.1.0.0/16"),))
MODALITIES = PeerRule("lan", networks=(net("192.168.7.0/24"), net("fd00::/8")), max_associations=2)
ARCHIVE = PeerRule("archive", calling_aetitle="ARCH", called_aetitles=("GATEWAY", "STORE"))
POLICY = AccessPolicy((CT01, MODALITIES, ARCHIVE), accept_unknown=False)


def verdict(calling: str, address: str, called: str = "GATEWAY", **running: int) -> object:
    decision = decide(POLICY, 64, (calling, called, address), sum(running.values()), running)
    return decision.rule.name if decision.rule else decision.rejection


@pytest.mark.parametrize(
    ("calling", "address", "expected"),
    [
        ("CT01", "10.1.2.3", "ct01"),
        # CT01 from elsewhere is not rule ct01; the LAN rule takes any calling AE.
        ("CT01", "192.168.7.9", "lan"),
        ("CT01", "10.2.0.1", Rejection.CALLING_AE_NOT_RECOGNIZED),
        ("MR02", "192.168.7.200", "lan"),
        ("MR02", "fd12::1", "lan"),
        ("ARCH", "172.16.0.1", "archive"),
        ("NOBODY", "172.16.0.1", Rejection.CALLING_AE_NOT_RECOGNIZED),
        ("NOBODY", "not-an-address", Rejection.CALLING_AE_NOT_RECOGNIZED),
    ],
)
def test_first_matching_rule_decides(calling: str, address: str, expected: object) -> None:
    assert verdict(calling, address) == expected


def test_called_ae_titles_of_a_rule() -> None:
    assert verdict("ARCH", "1.2.3.4", called="STORE") == "archive"
    decision = decide(POLICY, 64, ("ARCH", "OTHER", "1.2.3.4"), 0, {})
    assert decision.rejection is Rejection.CALLED_AE_NOT_RECOGNIZED
    assert decision.rejection.rsd == (1, 1, 7)
    assert decision.why == (
        "ARCH from 1.2.3.4: [peer archive] allows called AE titles GATEWAY, STORE, not OTHER"
    )


def test_limits() -> None:
    assert verdict("MR02", "192.168.7.1", lan=1) == "lan"
    full = decide(POLICY, 64, ("MR02", "GATEWAY", "192.168.7.1"), 2, {"lan": 2})
    assert full.rejection is Rejection.LOCAL_LIMIT_EXCEEDED
    assert full.rejection.rsd == (2, 3, 2)
    assert full.why == "MR02 from 192.168.7.1: [peer lan] allows 2 associations at once"
    everything = decide(POLICY, 3, ("CT01", "GATEWAY", "10.1.0.1"), 3, {})
    assert everything.rejection is Rejection.LOCAL_LIMIT_EXCEEDED
    assert everything.why == "CT01 from 10.1.0.1: max-associations = 3 are running"


def test_unknown_peers_accepted_by_default() -> None:
    decision = decide(AccessPolicy(), 64, ("ANY", "ANY", "127.0.0.1"), 0, {})
    assert decision.accepted and decision.rule is None
    refused = decide(POLICY, 64, ("ANY", "X", "127.0.0.1"), 0, {})
    assert refused.rejection is Rejection.CALLING_AE_NOT_RECOGNIZED
    assert refused.rejection.rsd == (1, 1, 3)
    assert refused.why == "ANY from 127.0.0.1: no [peer] rule matches and default-policy = reject"


def test_admission_never_admits_past_a_limit_under_contention() -> None:
    admission = Admission()
    policy = AccessPolicy((PeerRule("all", max_associations=5),))
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def request() -> None:
        start.wait()
        decision = admission.admit(policy, 64, ("A", "B", "127.0.0.1"))
        with lock:
            results.append(decision.accepted)

    threads = [threading.Thread(target=request) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 5
    assert admission.running == 5


# --- the INI sections --------------------------------------------------------------------

INI = """
[receiver]
default-policy = reject
profile = mr

[profile mr]
sop-classes = Verification MRImageStorage

[profile ct]
sop-classes = Verification CTImageStorage

[peer ct01]
calling-aetitle = CT01
addresses = 127.0.0.1, 10.0.0.0/8
called-aetitles = DCMRECVD
profile = ct
max-associations = 1

[peer everyone-else-on-lo]
addresses = 127.0.0.0/8
"""


def test_peer_sections() -> None:
    loaded = inifile.parse(INI, "test.conf")
    policy = loaded.settings.access
    assert not policy.accept_unknown
    assert policy.rules == (
        PeerRule(
            "ct01",
            calling_aetitle="CT01",
            networks=(net("127.0.0.1/32"), net("10.0.0.0/8")),
            called_aetitles=("DCMRECVD",),
            profile="ct",
            max_associations=1,
        ),
        PeerRule("everyone-else-on-lo", networks=(net("127.0.0.0/8"),)),
    )
    assert set(loaded.peer_profiles) == {"ct"}
    assert [c.abstract_syntax for c in loaded.peer_profiles["ct"].contexts] == [VERIFICATION, CT]


def test_a_rule_may_name_the_embedded_default() -> None:
    loaded = inifile.parse("[peer p]\nprofile = default\n", "t")
    assert len(loaded.peer_profiles["default"].contexts) == 171


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("[peer x]\naddresses = 10.0.0.300\n", 2, "not an IP address or CIDR range: '10.0.0.300'"),
        ("[peer x]\ncalling-aetitle = WAY_TOO_LONG_FOR_AN_AE\n", 2, "calling-aetitle: not an AE"),
        ("[peer x]\ncalled-aetitles = A\\B\n", 2, "called-aetitles: not an AE title"),
        ("[peer x]\nprofile = nope\n", 2, "profile: no [profile nope] section"),
        ("[peer x]\nmax-associations = 0\n", 2, "max-associations: 0 is out of range"),
        ("[peer x]\nfrom = 1.2.3.4\n", 2, "unknown key 'from' in section [peer x]"),
        ("[peer a/b]\n", 1, "a peer name is one word"),
        ("[receiver]\ndefault-policy = maybe\n", 2, "'maybe' is not accept or reject"),
    ],
)
def test_peer_section_errors(text: str, line: int, reason: str) -> None:
    with pytest.raises(inifile.ConfigError) as info:
        inifile.parse(text, "test.conf")
    assert (info.value.line, reason in info.value.reason) == (line, True), info.value


# --- on the wire -------------------------------------------------------------------------


@contextmanager
def serving(text: str) -> Iterator[tuple[int, Receiver]]:
    loaded = inifile.parse(text, "t")
    receiver = Receiver(loaded.settings, loaded.profile, peer_profiles=loaded.peer_profiles)
    listener = Listener.bind(LOCALHOST, 0)
    serving = Serving(receiver, listener)
    try:
        yield listener.address[1], receiver
    finally:
        serving.stop_accepting()
        listener.close()
        receiver.stop()


def request(port: int, calling: str, called: str, contexts: list[str]) -> Association:
    ae = AE(ae_title=calling)
    for uid in contexts:
        ae.add_requested_context(uid)
    return ae.associate(LOCALHOST, port, ae_title=called)


def rejection_of(assoc: Association) -> tuple[int, int, int]:
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    assert rj is not None
    return int(rj.result or 0), int(rj.result_source or 0), int(rj.diagnostic or 0)


def wait_for(test: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not test() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)  # polling interval of the deadline loop
    assert test(), "condition not reached"  # type: ignore[operator]


def test_rules_on_the_wire(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ini = INI.replace("[receiver]\n", f"[receiver]\noutput-directory = {tmp_path}\n", 1)
    # Nobody else on the loopback matches a rule now.
    ini = ini.replace("addresses = 127.0.0.0/8", "addresses = 10.99.0.0/16")
    caplog.set_level(logging.INFO, logger="dcmrecv")
    with serving(ini) as (port, receiver):
        ct01 = request(port, "CT01", "DCMRECVD", [CT, MR])
        assert ct01.is_established
        # CT01's own profile: CT, not the receiver's MR.
        assert {str(cx.abstract_syntax) for cx in ct01.accepted_contexts} == {CT}
        second = request(port, "CT01", "DCMRECVD", [CT])
        assert rejection_of(second) == (2, 3, 2)
        wrong_called = request(port, "CT01", "ARCHIVE", [CT])
        assert rejection_of(wrong_called) == (1, 1, 7)
        stranger = request(port, "MR99", "DCMRECVD", [MR])
        assert rejection_of(stranger) == (1, 1, 3)
        ct01.release()
        # Ended and refused associations give their places back.
        wait_for(lambda: receiver.admission.running == 0)
        again = request(port, "CT01", "DCMRECVD", [CT])
        assert again.is_established
        again.release()
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Refusing")]
    assert refusals == [
        "Refusing Association (local limit exceeded): CT01 from 127.0.0.1:"
        " [peer ct01] allows 1 associations at once",
        "Refusing Association (called AE title not recognized): CT01 from 127.0.0.1:"
        " [peer ct01] allows called AE titles DCMRECVD, not ARCHIVE",
        "Refusing Association (calling AE title not recognized): MR99 from 127.0.0.1:"
        " no [peer] rule matches and default-policy = reject",
    ]
    assert [r.REJECT_REASON for r in caplog.records if r.getMessage().startswith("Refusing")] == [  # type: ignore[attr-defined]
        "local limit exceeded",
        "called AE title not recognized",
        "calling AE title not recognized",
    ]
