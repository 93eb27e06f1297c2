"""DICOM TLS (PS3.15 B.9): the server's ssl.SSLContext from settings.TlsSettings.

Every profile keeps TLS 1.2 as the minimum. The BCP 195 profiles offer only ephemeral
key exchange with AEAD ciphers for TLS 1.2 (TLS 1.3 suites are OpenSSL's, all AEAD);
the extended profile drops finite-field DHE. DCMTK's retired profiles (AES, and NULL
encryption) sit below that floor and are refused. Any failure is a TlsError whose text
says which file or setting is wrong.
"""

from __future__ import annotations

import getpass
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

from dcmrecvd.settings import (
    CrlCheck,
    KeyFormat,
    PeerCertificate,
    Settings,
    TlsProfile,
    TlsSettings,
)

LOG = logging.getLogger("dcmrecv")


class TlsError(Exception):
    """The TLS layer cannot be set up (dcmrecv exits 71)."""


_BCP195 = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
)
# The TLS 1.2 suites +cs may add (BCP 195: ephemeral keys, AEAD), IANA -> OpenSSL names.
_IANA_NAMES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256": "DHE-RSA-AES128-GCM-SHA256",
    "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384": "DHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
# OpenSSL's TLS 1.3 suites, which Python cannot change.
_TLS13_NAMES = ("TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256")
_CIPHERS = {
    TlsProfile.BCP195_ND: _BCP195,
    TlsProfile.BCP195: _BCP195,
    TlsProfile.BCP195_EX: tuple(c for c in _BCP195 if c.startswith("ECDHE")),
}
_VERIFY_MODES = {
    PeerCertificate.REQUIRE: ssl.CERT_REQUIRED,
    PeerCertificate.VERIFY: ssl.CERT_OPTIONAL,
    PeerCertificate.IGNORE: ssl.CERT_NONE,
}


def _ask_password(key: Path) -> Callable[[], str]:
    # Called by OpenSSL only when the key is encrypted, as DCMTK's +ps prompts.
    return lambda: getpass.getpass(f"Enter the password for the private key {key}: ")


def _load_chain(context: ssl.SSLContext, tls: TlsSettings) -> None:
    # DCMTK's texts, condition codes included, for the two failures it tells apart.
    unusable_key = f"000b:0004 Unable to load private TLS key from '{tls.private_key}'"
    mismatch = (
        f"000b:0006 Private key '{tls.private_key}' and certificate '{tls.certificate}'"
        " do not match"
    )
    if tls.key_format is KeyFormat.DER:
        raise TlsError(f"{unusable_key}: DER keys are not supported, convert them to PEM")
    if not tls.private_key.is_file():
        raise TlsError(unusable_key)
    if not tls.certificate.is_file():
        raise TlsError(mismatch)
    password = _ask_password(tls.private_key) if tls.password is None else tls.password
    try:
        context.load_cert_chain(tls.certificate, tls.private_key, password)
    except (OSError, ssl.SSLError) as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise TlsError(mismatch) from exc
        raise TlsError(f"{unusable_key} ({exc})") from exc


def _load_trust(context: ssl.SSLContext, tls: TlsSettings) -> None:
    # As DCMTK, a certificate that cannot be loaded is skipped (verification then fails
    # closed); a CRL that cannot be loaded is fatal, where DCMTK would accept revoked peers.
    for path in tls.ca_files:
        try:
            context.load_verify_locations(cafile=path)
        except (OSError, ssl.SSLError):
            LOG.warning("unable to load certificate file '%s', ignoring", path)
    for directory in tls.ca_directories:
        if directory.is_dir():
            context.load_verify_locations(capath=directory)
        else:
            LOG.warning("unable to use certificate directory '%s', ignoring", directory)
    for path in tls.crl_files:
        try:
            context.load_verify_locations(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"Unable to load CRL file '{path}': {exc}") from exc
    if tls.crl_check is CrlCheck.LEAF:
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    elif tls.crl_check is CrlCheck.CHAIN:
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """A server-side context for `tls`; raises TlsError on any problem."""
    if tls.profile not in _CIPHERS:
        raise TlsError(
            f"the retired {tls.profile.value} TLS profile is below dcmrecvd's TLS 1.2 minimum"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    added = []
    for name in tls.ciphers:
        if name not in _IANA_NAMES:
            raise TlsError(
                f"ciphersuite {name} is not allowed: TLS 1.2 suites with ephemeral keys and"
                " AEAD only (see +cc)"
            )
        added.append(_IANA_NAMES[name])
    context.set_ciphers(":".join((*_CIPHERS[tls.profile], *added)))
    if tls.dh_parameters is not None:
        try:
            context.load_dh_params(str(tls.dh_parameters))
        except (OSError, ssl.SSLError):
            LOG.warning(
                "unable to load temporary DH parameter file '%s', ignoring", tls.dh_parameters
            )
    _load_chain(context, tls)
    _load_trust(context, tls)
    context.verify_mode = _VERIFY_MODES[tls.peer_certificate]
    return context


def client_context(tls: TlsSettings) -> ssl.SSLContext:
    """A client-side context for `tls` (the associations dcmrecvd opens itself): the same
    profile, our certificate for the peer to check, and the peer's checked against our
    trust. DICOM peers are named by address, not by certificate name: the chain is
    verified, the host name is not. Raises TlsError on any problem."""
    if tls.profile not in _CIPHERS:
        raise TlsError(
            f"the retired {tls.profile.value} TLS profile is below dcmrecvd's TLS 1.2 minimum"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(":".join(_CIPHERS[tls.profile]))
    _load_chain(context, tls)
    _load_trust(context, tls)
    context.check_hostname = False
    context.verify_mode = _VERIFY_MODES[tls.peer_certificate]
    return context


def context_for(settings: Settings) -> ssl.SSLContext | None:
    """The server context of `settings`' TLS listener, None without one."""
    return None if settings.tls is None else server_context(settings.tls)


def cipher_list() -> str:
    """+cc: the suites that may be negotiated, by IANA name as DCMTK lists them."""
    return "".join(f"  {name}\n" for name in (*_TLS13_NAMES, *_IANA_NAMES))
