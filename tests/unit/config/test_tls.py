"""DICOM TLS: the context (unit), dcmrecv's TLS options against DCMTK's echoscu and
storescu, exit code 71 as DCMTK's, and the daemon's TLS listener with a reload that
takes renewed certificates."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from dcmrecvd.config import tls
from dcmrecvd.settings import CrlCheck, PeerCertificate, TlsProfile, TlsSettings
from tests.support import dicomgen
from tests.support.daemon import conf, dcmrecvd
from tests.support.net import LOCALHOST, free_port
from tests.support.peers import wait_listening

OURS = str(Path(sys.executable).with_name("dcmrecv"))
DEADLINE = 30.0


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@dataclass(frozen=True)
class Pki:
    """A CA, a server and a client it signed, and a client signed by nobody we trust."""

    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    def issue(self, name: str, ca: str = "ca") -> None:
        key, csr, cert = (self.path(f"{name}.{x}") for x in ("key", "csr", "pem"))
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            csr,
            "-subj",
            f"/CN={name}",
        )
        openssl(
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            self.path(f"{ca}.pem"),
            "-CAkey",
            self.path(f"{ca}.key"),
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "2",
        )

    def authority(self, name: str) -> None:
        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            self.path(f"{name}.key"),
            "-out",
            self.path(f"{name}.pem"),
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    pki.authority("ca")
    pki.authority("rogue-ca")
    pki.issue("server")
    pki.issue("client")
    pki.issue("rogue", ca="rogue-ca")
    return pki


def settings(pki: Pki, **changes: object) -> TlsSettings:
    base = TlsSettings(
        pki.path("server.key"), pki.path("server.pem"), password="", ca_files=(pki.path("ca.pem"),)
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# --- the context -------------------------------------------------------------------------


def test_context_is_tls12_minimum_and_verifies_peers(pki: Pki) -> None:
    context = tls.server_context(settings(pki))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_REQUIRED
    names = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names and all(("GCM" in n or "CHACHA" in n) and "DHE" in n for n in names)
    optional = tls.server_context(settings(pki, peer_certificate=PeerCertificate.VERIFY))
    assert optional.verify_mode is ssl.CERT_OPTIONAL
    ignore = tls.server_context(settings(pki, peer_certificate=PeerCertificate.IGNORE))
    assert ignore.verify_mode is ssl.CERT_NONE


def test_extended_profile_has_no_finite_field_dhe(pki: Pki) -> None:
    context = tls.server_context(settings(pki, profile=TlsProfile.BCP195_EX))
    names = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names and not any(n.startswith("DHE") for n in names)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"private_key": Path("/nonexist.key")}, "000b:0004 Unable to load private TLS key"),
        ({"certificate": Path("/nonexist.pem")}, "and certificate '/nonexist.pem' do not match"),
        ({"profile": TlsProfile.NULL}, "retired null TLS profile"),
        ({"profile": TlsProfile.AES}, "retired aes TLS profile"),
        ({"ciphers": ("TLS_RSA_WITH_NULL_SHA",)}, "TLS_RSA_WITH_NULL_SHA is not allowed"),
        ({"crl_files": (Path("/nonexist.crl"),)}, "Unable to load CRL file '/nonexist.crl'"),
    ],
)
def test_setup_errors(pki: Pki, changes: dict[str, object], message: str) -> None:
    with pytest.raises(tls.TlsError) as info:
        tls.server_context(settings(pki, **changes))
    assert message in str(info.value)


def test_key_and_certificate_that_do_not_match(pki: Pki) -> None:
    with pytest.raises(tls.TlsError) as info:
        tls.server_context(settings(pki, certificate=pki.path("client.pem")))
    assert str(info.value) == (
        f"000b:0006 Private key '{pki.path('server.key')}' and certificate"
        f" '{pki.path('client.pem')}' do not match"
    )


def test_a_cipher_can_be_added_by_its_iana_name(pki: Pki) -> None:
    name = "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
    assert name in tls.cipher_list()
    context = tls.server_context(settings(pki, ciphers=(name,)))
    assert "ECDHE-RSA-CHACHA20-POLY1305" in {c["name"] for c in context.get_ciphers()}


def test_crl_check_flags(pki: Pki) -> None:
    crl = pki.path("empty.crl")
    cfg = pki.path("ca.cnf")
    (pki.directory / "index.txt").write_text("")
    cfg.write_text(
        f"[ca]\ndefault_ca = d\n[d]\ndatabase = {pki.directory}/index.txt\n"
        "default_md = sha256\ndefault_crl_days = 2\n"
    )
    openssl(
        "ca",
        "-gencrl",
        "-config",
        cfg,
        "-keyfile",
        pki.path("ca.key"),
        "-cert",
        pki.path("ca.pem"),
        "-out",
        crl,
    )
    leaf = tls.server_context(settings(pki, crl_files=(crl,), crl_check=CrlCheck.LEAF))
    assert leaf.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    chain = tls.server_context(settings(pki, crl_files=(crl,), crl_check=CrlCheck.CHAIN))
    assert chain.verify_flags & ssl.VERIFY_CRL_CHECK_CHAIN


# --- dcmrecv against DCMTK's TLS peers ---------------------------------------------------


def run_ours(args: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [OURS, *args, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wait_listening(port, proc)
    return proc


def echo(pki: Pki, port: int, client: str | None) -> int:
    tls_args = (
        []
        if client is None
        else [
            "+tls",
            str(pki.path(f"{client}.key")),
            str(pki.path(f"{client}.pem")),
            "+cf",
            str(pki.path("ca.pem")),
        ]
    )
    return subprocess.run(
        ["echoscu", *tls_args, LOCALHOST, str(port)],
        capture_output=True,
        check=False,
        timeout=DEADLINE,
    ).returncode


@pytest.mark.interop
@pytest.mark.slow
def test_dcmtk_peers_over_tls(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    server = [
        "+tls",
        str(pki.path("server.key")),
        str(pki.path("server.pem")),
        "+cf",
        str(pki.path("ca.pem")),
    ]
    files = dicomgen.write_all([dicomgen.Spec(dicomgen.CT, "1.2.3.4.700")], tmp_path / "send")
    proc = run_ours(["-xf", str(cfg_file(tmp_path)), "Store", "-od", str(tmp_path), *server], port)
    try:
        assert echo(pki, port, "client") == 0
        stored = subprocess.run(
            [
                "storescu",
                "+tls",
                str(pki.path("client.key")),
                str(pki.path("client.pem")),
                "+cf",
                str(pki.path("ca.pem")),
                LOCALHOST,
                str(port),
                str(files[0]),
            ],
            capture_output=True,
            check=False,
            timeout=DEADLINE,
        )
        assert stored.returncode == 0, stored.stderr
        # -rc (the default): a client that is not from our CA, or has no TLS, is refused.
        assert echo(pki, port, "rogue") != 0
        assert echo(pki, port, None) != 0
        # A refused handshake does not stop the next good one.
        assert echo(pki, port, "client") == 0
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=DEADLINE)
    assert (tmp_path / "CT.1.2.3.4.700").is_file()
    assert "TLS handshake with 127.0.0.1 failed" in err.decode()


@pytest.mark.interop
@pytest.mark.slow
def test_ignore_peer_cert_accepts_any_client(pki: Pki) -> None:
    port = free_port()
    proc = run_ours(["+tls", str(pki.path("server.key")), str(pki.path("server.pem")), "-ic"], port)
    try:
        # echoscu itself checks our certificate against the CA it is given.
        assert echo(pki, port, "rogue") == 0
    finally:
        proc.terminate()
        proc.communicate(timeout=DEADLINE)


def cfg_file(directory: Path) -> Path:
    path = directory / "store.cfg"
    path.write_text(
        "[[TransferSyntaxes]]\n[U]\nTransferSyntax1 = LittleEndianExplicit\n"
        "TransferSyntax2 = LittleEndianImplicit\n"
        "[[PresentationContexts]]\n[P]\nPresentationContext1 = VerificationSOPClass\\U\n"
        "PresentationContext2 = CTImageStorage\\U\n[[Profiles]]\n[Store]\n"
        "PresentationContexts = P\n"
    )
    return path


@pytest.mark.interop
@pytest.mark.parametrize("case", ["no-key", "mismatch"])
def test_tls_setup_errors_exit_71_like_dcmrecv(
    pki: Pki, tmp_path: Path, dcmtk_dcmrecv: str, case: str
) -> None:
    key, cert = {
        "no-key": ("/nonexist.key", str(pki.path("server.pem"))),
        "mismatch": (str(pki.path("server.key")), str(pki.path("client.pem"))),
    }[case]
    results = []
    for binary in (dcmtk_dcmrecv, OURS):
        run = subprocess.run(
            [binary, "-od", str(tmp_path), "+tls", key, cert, "-pw", str(free_port())],
            capture_output=True,
            text=True,
            check=False,
            timeout=DEADLINE,
        )
        fatal = [line for line in run.stderr.splitlines() if line.startswith("F:")]
        results.append((run.returncode, fatal))
    assert results[0][0] == 71
    assert results[1] == results[0]


def test_list_ciphers_exits_0() -> None:
    run = subprocess.run([OURS, "+cc"], capture_output=True, text=True, check=False)
    assert run.returncode == 0
    lines = run.stdout.splitlines()
    suites = lines[lines.index("Supported TLS ciphersuites are:") + 1 :]
    assert "  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" in suites
    assert all(line.startswith("  TLS_") for line in suites)


# --- the daemon --------------------------------------------------------------------------


def tls_section(pki: Pki, port: int, server: str = "server") -> str:
    return (
        f"[tls]\nport = {port}\nprivate-key = {pki.path(server + '.key')}\n"
        f"certificate = {pki.path(server + '.pem')}\nca-certificates = {pki.path('ca.pem')}\n"
    )


@pytest.mark.interop
@pytest.mark.slow
def test_daemon_serves_tls_and_reload_takes_a_renewed_certificate(pki: Pki, tmp_path: Path) -> None:
    port, tls_port = free_port(), free_port()
    out = tmp_path / "in"
    out.mkdir()
    with dcmrecvd(tmp_path, conf(port, out, tls_section(pki, tls_port))) as daemon:
        wait_listening(tls_port)
        assert echo(pki, tls_port, "client") == 0
        assert echo(pki, port, None) == 0  # the plain port serves too
        # A server certificate from another CA: clients that trust only ours refuse it.
        pki.issue("renewed", ca="rogue-ca")
        daemon.conf.write_text(conf(port, out, tls_section(pki, tls_port, "renewed")))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.notify.wait_for(lambda m: m.get("RELOADING") == "1")
        daemon.notify.wait_for(lambda m: m.get("READY") == "1")
        assert echo(pki, tls_port, "client") != 0
        # A certificate that does not load is refused; the running one stays.
        broken = tls_section(pki, tls_port).replace("server.pem", "missing.pem")
        daemon.conf.write_text(conf(port, out, broken))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.notify.wait_for(lambda m: m.get("RELOADING") == "1")
        daemon.notify.wait_for(lambda m: m.get("READY") == "1")
        assert echo(pki, tls_port, "client") != 0
        assert daemon.stop() == 0
    assert f"listening on 127.0.0.1:{tls_port} with TLS" in daemon.log()
    assert "reload refused, the running configuration stays in force" in daemon.log()
    assert "missing.pem' do not match" in daemon.log()
