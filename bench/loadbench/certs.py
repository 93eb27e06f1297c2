"""A throwaway TLS identity for the TLS scenarios, made with openssl in the work dir."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .ulclient import TlsFiles


def self_signed(directory: Path) -> TlsFiles:
    """An EC P-256 key and a self-signed certificate for it, made once per directory.

    Every party (receivers, storescu, the probe) presents this certificate and trusts
    only it: mutual authentication, as DICOM TLS peers run, with nothing to set up.
    """
    files = TlsFiles(directory / "bench.key", directory / "bench.pem")
    if files.key.is_file() and files.certificate.is_file():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=dcmrecvd-loadbench",
            "-keyout",
            str(files.key),
            "-out",
            str(files.certificate),
        ],
        check=True,
        capture_output=True,
    )
    return files
