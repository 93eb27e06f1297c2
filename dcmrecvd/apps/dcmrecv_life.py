"""dcmrecv's life: load the profile, check the output directory, listen, serve until killed,
and end with DCMTK dcmrecv's exit codes.

Like dcmrecv.cc over DcmStorageSCP: the option grammar (apps/dcmrecv.py) hands over its
Settings, the Receiver holds the policy and the ObjectStore the files.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from dcmrecvd.config import asconfig, tls
from dcmrecvd.pnd import server
from dcmrecvd.profiles import BUILTIN_VERIFICATION, Profile
from dcmrecvd.receiver import Receiver, tune_process
from dcmrecvd.settings import Settings
from dcmrecvd.store import objectstore

LOG = logging.getLogger("dcmrecv")

# Exit codes of DCMTK's dcmrecv.
EXIT_INVALID_OUTPUT_DIRECTORY = 45
EXIT_CANNOT_START_SCP_AND_LISTEN = 64
EXIT_INVALID_ASSOCIATION_CONFIG = 66
EXIT_CANNOT_CREATE_TRANSPORT_LAYER = 71


class ConfigurationError(Exception):
    """The negotiation profile cannot be loaded; carries DCMTK's log texts."""

    def __init__(self, error: str | None, fatal: str) -> None:
        super().__init__(fatal)
        self.error = error
        self.fatal = fatal


def load_profile(settings: Settings) -> Profile:
    """The profile named by -xf, or the built-in Verification-only one."""
    if settings.config_file is None:
        LOG.warning(
            "no configuration file specified, SCP will only support the Verification SOP Class"
        )
        return BUILTIN_VERIFICATION
    path = str(settings.config_file)
    try:
        document = asconfig.load(path, context_list_limit=settings.context_list_limit)
        return asconfig.select_profile(document, settings.profile_name or "", path)
    except asconfig.AsConfigError as exc:
        raise ConfigurationError(exc.dcmtk_error, exc.dcmtk_fatal) from exc


def _wait_for_termination() -> int:
    """Block until SIGTERM or SIGINT (the servers run in their own threads); the signal."""
    received: list[int] = []
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)
    stop.wait()
    return received[0]


def _die_by(signum: int) -> None:
    """End the process by `signum`, as DCMTK's dcmrecv does (shell status 128+signum)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def run(settings: Settings) -> int:
    """dcmrecv's startup order (config 66, output directory 45, listen 64), then serve."""
    LOG.info("configuring service class provider ...")
    try:
        profile = load_profile(settings)
    except ConfigurationError as exc:
        if exc.error:
            LOG.error("%s", exc.error)
        LOG.critical("%s", exc.fatal)
        return EXIT_INVALID_ASSOCIATION_CONFIG
    reason = objectstore.check_output_directory(settings.output_dir)
    if reason:
        LOG.critical("cannot specify output directory: %s", reason)
        return EXIT_INVALID_OUTPUT_DIRECTORY
    LOG.info("starting service class provider and listening ...")
    try:
        ssl_context = None if settings.tls is None else tls.server_context(settings.tls)
    except tls.TlsError as exc:
        LOG.critical("%s", exc)
        return EXIT_CANNOT_CREATE_TRANSPORT_LAYER
    try:
        listener = server.Listener.bind(settings.bind_address, settings.port)
    except OSError as exc:
        LOG.critical(
            "cannot start SCP and listen on port %d: TCP Initialization Error: %s",
            settings.port,
            exc.strerror or exc,
        )
        return EXIT_CANNOT_START_SCP_AND_LISTEN
    receiver = Receiver(settings, profile)
    objectstore.sweep_spool(settings)
    tune_process()
    serving = server.Serving(receiver, listener, ssl_context)
    try:
        signum = _wait_for_termination()
    finally:
        serving.stop_accepting()
        listener.close()
        receiver.stop()
    _die_by(signum)
    return 128 + signum
