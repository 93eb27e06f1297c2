"""The shipped HAProxy example, etc/haproxy/dcmrecvd.cfg: its DICOM health check sends
the A-ASSOCIATE-RQ and A-RELEASE-RQ its comments describe, dcmrecvd and DCMTK's dcmrecv
answer them as its expect rules want, and HAProxy accepts the file."""

from __future__ import annotations

import configparser
import re
import subprocess
from pathlib import Path

import pytest
from pynetdicom.pdu import A_ASSOCIATE_RQ, A_RELEASE_RQ

from dcmrecvd.profiles import all_storage_profile
from dcmrecvd.settings import Settings
from tests.support import haproxy
from tests.support.paths import REPO
from tests.support.peers import dcmtk_receiver, our_receiver
from tests.support.rawpdu import ASSOCIATE_AC, ASSOCIATE_RJ, RELEASE_RP, Peer, pdu

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
# The AE title the shipped dcmrecvd.conf answers as: the check must call it.
AETITLE = "DCMRECVD"


def exchanges(text: str) -> list[tuple[bytes, str]]:
    """What the tcp-check rules of `text` send (consecutive send-binary rules make one
    message) and the rbinary pattern the answer must match, in order."""
    found: list[tuple[bytes, str]] = []
    message = b""
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words[:2] == ["tcp-check", "send-binary"]:
            message += bytes.fromhex(words[2])
        elif words[:2] == ["tcp-check", "expect"]:
            assert words[2] == "rbinary", f"an expect rule other than rbinary: {line}"
            found.append((message, words[3]))
            message = b""
    assert not message, "bytes sent after the last expect rule"
    return found


def check() -> list[tuple[bytes, str]]:
    return exchanges(haproxy.EXAMPLE.read_text())


def answers(port: int) -> list[bytes]:
    """Each whole PDU that the receiver on `port` answers to the check's messages."""
    peer = Peer(port, timeout=10)
    try:
        answered = []
        for message, _pattern in check():
            assert peer.send(message)
            answer = peer.read_pdu(timeout=10)
            assert answer is not None, f"no answer to {message.hex()}"
            answered.append(pdu(*answer))
        return answered
    finally:
        peer.close()


def matches(pattern: str, answer: bytes) -> bool:
    """As HAProxy's rbinary: the regex against the answer in upper-case hexadecimal."""
    return re.search(pattern, answer.hex().upper()) is not None


def test_the_check_sends_an_associate_rq_for_verification_then_a_release_rq() -> None:
    (associate, _), (release, _) = check()
    rq = A_ASSOCIATE_RQ()
    rq.decode(associate)
    # Encoding it again gives the same bytes: the lengths are right, nothing trails.
    assert rq.encode() == associate
    assert rq.called_ae_title == AETITLE
    assert rq.calling_ae_title == "HAPROXY-CHECK"
    assert rq.application_context_name == APPLICATION_CONTEXT
    [context] = rq.presentation_context
    assert (context.context_id, context.abstract_syntax) == (1, VERIFICATION)
    assert context.transfer_syntax == [IMPLICIT]
    user = rq.user_information
    assert user is not None
    assert user.maximum_length == 16384
    assert user.implementation_class_uid is not None
    assert str(user.implementation_class_uid).startswith("2.25.")
    rp = A_RELEASE_RQ()
    rp.decode(release)
    assert rp.encode() == release


def test_the_check_calls_the_aetitle_of_the_shipped_dcmrecvd_conf() -> None:
    shipped = configparser.ConfigParser()
    shipped.read(REPO / "etc" / "dcmrecvd" / "dcmrecvd.conf")
    assert shipped["receiver"]["aetitle"] == AETITLE


def test_the_expect_rules_want_an_associate_ac_then_a_release_rp() -> None:
    patterns = [pattern for _message, pattern in check()]
    assert patterns == ["^02", "^06"]
    ac, rj, rp = (pdu(kind, b"\0" * 4) for kind in (ASSOCIATE_AC, ASSOCIATE_RJ, RELEASE_RP))
    assert matches(patterns[0], ac) and not matches(patterns[0], rj)
    assert matches(patterns[1], rp) and not matches(patterns[1], ac)


def test_dcmrecvd_answers_the_check_as_it_expects(tmp_path: Path, port: int) -> None:
    settings = Settings(
        port=port, aetitle=AETITLE, check_called_aetitle=True, output_dir=str(tmp_path)
    )
    with our_receiver(all_storage_profile(), port, settings):
        answered = answers(port)
    assert [answer[0] for answer in answered] == [ASSOCIATE_AC, RELEASE_RP]
    assert all(matches(p, a) for (_m, p), a in zip(check(), answered, strict=True))


def test_a_node_with_another_aetitle_fails_the_check(tmp_path: Path, port: int) -> None:
    settings = Settings(
        port=port, aetitle="ELSEWHERE", check_called_aetitle=True, output_dir=str(tmp_path)
    )
    (associate, pattern), _ = check()
    with our_receiver(all_storage_profile(), port, settings):
        peer = Peer(port, timeout=10)
        try:
            assert peer.send(associate)
            answer = peer.read_pdu(timeout=10)
        finally:
            peer.close()
    assert answer is not None and answer[0] == ASSOCIATE_RJ
    assert not matches(pattern, pdu(*answer))


def test_dcmtk_dcmrecv_answers_the_check_as_it_expects(
    dcmtk_dcmrecv: str, tmp_path: Path, port: int
) -> None:
    with dcmtk_receiver(dcmtk_dcmrecv, ["-aet", AETITLE, "-od", str(tmp_path)], port):
        answered = answers(port)
    assert [answer[0] for answer in answered] == [ASSOCIATE_AC, RELEASE_RP]
    assert all(matches(p, a) for (_m, p), a in zip(check(), answered, strict=True))


@pytest.mark.parametrize("proxy_protocol", [True, False], ids=["as-shipped", "no-proxy"])
def test_haproxy_accepts_the_example(tmp_path: Path, proxy_protocol: bool) -> None:
    binary = haproxy.installed()
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy.render(haproxy.EXAMPLE.read_text(), proxy_protocol=proxy_protocol))
    run = subprocess.run(
        [str(binary), "-c", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Configuration file is valid" in run.stdout
