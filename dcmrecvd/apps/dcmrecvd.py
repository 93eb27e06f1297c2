"""dcmrecvd: the receiver as a systemd service, or as a classic daemon: the start-up.

Reads the arguments and the configuration, checks it (--check-config, --print-asconfig),
sets up logging, takes the listening sockets (systemd's or its own), detaches if asked,
and hands over to the arbiter (service/arbiter.py), the parent of the worker processes.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import logging.handlers
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from dcmrecvd import __version__, logs
from dcmrecvd.config import asconfig, inifile, tls
from dcmrecvd.metrics import status
from dcmrecvd.pnd.server import Listener
from dcmrecvd.service import arbiter, observer, systemd
from dcmrecvd.settings import DCMTK_CONTEXT_LIST_LIMIT, Settings
from dcmrecvd.store import index, objectstore

PROGRAM = "dcmrecvd"
LOG = logging.getLogger("dcmrecv.daemon")

# With the arbiter's EXIT_OK and EXIT_UNAVAILABLE, which its main loop returns too.
EXIT_USAGE = 2
# sysexits.h: EX_CONFIG (systemd's RestartPreventExitStatus can name it) and friends.
EXIT_CONFIG = 78
EXIT_CANNOT_CREATE = 73
# `dcmrecvd status`: an answer that is not a status document, and a socket it may not use.
EXIT_PROTOCOL = 76
EXIT_NOPERM = 77
# Seconds `dcmrecvd status` waits for the daemon's answer.
STATUS_TIMEOUT = 10.0


def _source(
    parser: argparse.ArgumentParser, config_help: str, no_config_help: str, *, socket: bool
) -> None:
    """--config FILE or --no-config (or, with `socket`, --socket PATH), as the daemon and
    `dcmrecvd status` take them."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--config", type=Path, default=inifile.DEFAULT_PATH, metavar="FILE", help=config_help
    )
    source.add_argument("--no-config", action="store_true", help=no_config_help)
    if socket:
        source.add_argument("--socket", type=Path, metavar="PATH", help="the status socket itself")


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="DICOM storage receiver (the dcmrecv receiver as a system service).",
        epilog=f"{PROGRAM} status [--json] shows what the running daemon does"
        f" (see {PROGRAM} status --help).",
    )
    _source(
        parser,
        f"INI configuration file (default: {inifile.DEFAULT_PATH})",
        "read no file: the embedded defaults (every storage SOP class, port 11112,"
        " files into ./incoming)",
        socket=False,
    )
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument(
        "--check-config",
        action="store_true",
        help="check the configuration, print what is wrong (file:line: reason) and exit",
    )
    actions.add_argument(
        "--reload",
        type=int,
        metavar="PID",
        help="the unit's ExecReload=: tell systemd that a reload starts, then send SIGHUP"
        " to the daemon PID",
    )
    actions.add_argument(
        "--check-index",
        action="store_true",
        help="compare the index with the output directory, print what differs and exit"
        " (1 if anything does)",
    )
    actions.add_argument(
        "--print-asconfig",
        action="store_true",
        help="print the configured profiles as a DCMTK association configuration file",
    )
    parser.add_argument(
        "--daemon",
        action="store_true",
        help="detach from the terminal (hosts without systemd only; needs --pidfile)",
    )
    parser.add_argument("--pidfile", type=Path, metavar="FILE", help="pidfile for --daemon")
    parser.add_argument("--version", action="version", version=f"{PROGRAM} {__version__}")
    args = parser.parse_args(argv)
    if args.daemon and args.pidfile is None:
        parser.error("--daemon needs --pidfile")
    if args.pidfile is not None and not args.daemon:
        parser.error("--pidfile goes with --daemon")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """dcmrecvd's command line; the exit status."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["status"]:
        return _status(arguments[1:])
    args = _arguments(arguments)
    if args.reload is not None:
        return _reload(args.reload)
    try:
        loaded = inifile.read(inifile.EMBEDDED if args.no_config else str(args.config))
    except inifile.ConfigError as exc:
        sys.stderr.write(f"{PROGRAM}: {exc}\n")
        return EXIT_CONFIG
    if args.check_config:
        return _check(loaded)
    if args.check_index:
        return _check_index(loaded)
    if args.print_asconfig:
        return _print_asconfig(loaded)
    if args.daemon:
        return _detached(loaded, args.pidfile)
    return _foreground(loaded)


def _check(loaded: inifile.Config) -> int:
    try:
        tls.context_for(loaded.settings)
    except tls.TlsError as exc:
        sys.stderr.write(f"{PROGRAM}: {loaded.path}: [tls]: {exc}\n")
        return EXIT_CONFIG
    # Only a warning: under systemd, StateDirectory= creates the directory at start.
    reason = objectstore.check_output_directory(loaded.settings.output_dir)
    if reason is not None:
        sys.stderr.write(
            f"{PROGRAM}: warning: {loaded.path}: output-directory"
            f" {loaded.settings.output_dir}: {reason}\n"
        )
    sys.stdout.write(
        f"{PROGRAM}: {loaded.path}: configuration is valid; profile {loaded.profile.name}"
        f" with {len(loaded.profile.contexts)} presentation contexts\n"
    )
    return arbiter.EXIT_OK


def _reload(pid: int) -> int:
    """Start a reload so that `systemctl reload` waits for it to end.

    systemd ends a reload job when ExecReload= exits, unless it has read RELOADING=1
    first; then it waits for READY=1, which the daemon sends when the new configuration
    is in force (or refused). The daemon sends RELOADING=1 when SIGHUP reaches it, but a
    bare `kill -HUP` may exit before that, and `systemctl reload` returned with the old
    configuration still serving. So this control process (NotifyAccess=exec lets it)
    says RELOADING=1 itself, before the signal.
    """
    notifier = systemd.Notifier.from_environment()
    notifier.reloading()
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        notifier.ready()  # no reload comes: systemd must not wait for one
        sys.stderr.write(f"{PROGRAM}: cannot signal process {pid}: {exc.strerror}\n")
        return EXIT_USAGE
    return arbiter.EXIT_OK


def _check_index(loaded: inifile.Config) -> int:
    if loaded.settings.index_path is None:
        sys.stderr.write(f"{PROGRAM}: {loaded.path}: no index configured ([receiver] index)\n")
        return EXIT_CONFIG
    try:
        found = objectstore.check_index(loaded.settings)
    except index.IndexFailure as exc:
        sys.stderr.write(f"{PROGRAM}: {exc}\n")
        return EXIT_CONFIG
    for path in found.added:
        sys.stdout.write(f"not listed: {path}\n")
    for path in found.gone:
        sys.stdout.write(f"listed but gone: {path}\n")
    sys.stdout.write(
        f"{PROGRAM}: index {loaded.settings.index_path}: {len(found.added)} not listed,"
        f" {len(found.gone)} gone, {found.others} of other nodes\n"
    )
    return 1 if found.added or found.gone else arbiter.EXIT_OK


def _print_asconfig(loaded: inifile.Config) -> int:
    # The file's profiles, and the one in force when it is the embedded default.
    profiles = list(loaded.profiles.values())
    if loaded.profile.name not in loaded.profiles:
        profiles.append(loaded.profile)
    document = asconfig.from_profiles(profiles)
    sys.stdout.write(asconfig.render(document))
    for profile in profiles:
        if len(profile.contexts) > DCMTK_CONTEXT_LIST_LIMIT:
            sys.stderr.write(
                f"{PROGRAM}: warning: profile {profile.name} has {len(profile.contexts)}"
                f" presentation contexts; DCMTK 3.6.7 accepts at most"
                f" {DCMTK_CONTEXT_LIST_LIMIT} in one list (3.6.8 and later accept it)\n"
            )
    return arbiter.EXIT_OK


# --- dcmrecvd status ----------------------------------------------------------------------


def _status_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"{PROGRAM} status",
        description="Show what the running daemon does: its counters, its worker processes"
        " and the associations in progress, read from its [status] socket.",
    )
    _source(
        parser,
        f"find the socket in this configuration file (default: {inifile.DEFAULT_PATH})",
        "the embedded defaults (they have no socket)",
        socket=True,
    )
    parser.add_argument(
        "--json", action="store_true", help="print the status document as JSON, as received"
    )
    return parser.parse_args(argv)


def _status(argv: Sequence[str]) -> int:
    args = _status_arguments(argv)
    if args.socket is not None:
        path = str(args.socket)
    else:
        try:
            loaded = inifile.read(inifile.EMBEDDED if args.no_config else str(args.config))
        except inifile.ConfigError as exc:
            sys.stderr.write(f"{PROGRAM}: {exc}\n")
            return EXIT_CONFIG
        if loaded.settings.status_socket is None:
            sys.stderr.write(
                f"{PROGRAM}: no [status] socket in {loaded.path}: set one there"
                " (and reload the daemon) or name it with --socket\n"
            )
            return EXIT_CONFIG
        path = loaded.settings.status_socket
    try:
        reply = _ask(path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, PermissionError):
            sys.stderr.write(f"{PROGRAM}: {path}: {reason}: run as root or as the dcmrecvd user\n")
            return EXIT_NOPERM
        hint = ""
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
            hint = ": is dcmrecvd running? (systemctl status dcmrecvd)"
        elif isinstance(exc, TimeoutError):
            reason = f"no answer within {STATUS_TIMEOUT:g} s"
        sys.stderr.write(f"{PROGRAM}: {path}: {reason}{hint}\n")
        return arbiter.EXIT_UNAVAILABLE
    try:
        document = json.loads(reply)
    except ValueError:
        document = None
    if not isinstance(document, dict) or document.get("format") != status.FORMAT:
        sys.stderr.write(
            f"{PROGRAM}: {path} did not answer with a status document this {PROGRAM} can read"
            " (a daemon of another version? restart it after an upgrade)\n"
        )
        return EXIT_PROTOCOL
    if args.json:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write(status.render(document))
    return arbiter.EXIT_OK


def _ask(path: str) -> bytes:
    """What the status socket at `path` sends until it closes. Raises OSError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(STATUS_TIMEOUT)
        client.connect(path)
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --- logging -----------------------------------------------------------------------------


def _log_handler(settings: Settings, detached: bool) -> logging.Handler:
    destination = settings.log_destination
    if destination == "auto":
        fallback = "syslog" if detached else "stderr"
        destination = "journal" if systemd.under_systemd() else fallback
    if destination == "journal":
        return systemd.journal_handler(PROGRAM)
    handler: logging.Handler
    if destination == "syslog":
        handler = logging.handlers.SysLogHandler("/dev/log")
        handler.setFormatter(logging.Formatter(f"{PROGRAM}[%(process)d]: %(message)s"))
        return handler
    if destination == "stderr":
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.handlers.WatchedFileHandler(destination, encoding="utf-8")
    handler.setFormatter(logs.DcmtkFormatter())
    return handler


# --- the service -------------------------------------------------------------------------


def _listeners(settings: Settings) -> tuple[dict[str, Listener], socket.socket | None]:
    """The plain listener, and the TLS one when [tls] is configured: systemd's sockets
    by name when it passes them, else bound here; and the metrics endpoint's socket if
    systemd passes one (dcmrecvd-metrics.socket)."""
    inherited = systemd.inherited_sockets()
    metrics_socket = observer.inherited_metrics_socket(inherited)
    wanted = [arbiter.SOCKET_NAME, *([arbiter.TLS_SOCKET_NAME] if settings.tls is not None else [])]
    # A socket unit without FileDescriptorName= passes "unknown": that is the plain one.
    if arbiter.SOCKET_NAME not in inherited and "unknown" in inherited:
        inherited[arbiter.SOCKET_NAME] = inherited.pop("unknown")
    listeners: dict[str, Listener] = {}
    for name in wanted:
        sockets = inherited.get(name, [])
        if sockets:
            listeners[name] = Listener(sockets.pop(0), inherited=True)
    for extra in (sock for group in inherited.values() for sock in group):
        LOG.warning("ignoring an inherited socket not named %s: %s", " or ".join(wanted), extra)
        extra.close()
    ports = {arbiter.SOCKET_NAME: settings.port, arbiter.TLS_SOCKET_NAME: settings.tls_port}
    try:
        for name in wanted:
            if name not in listeners:
                listeners[name] = Listener.bind(settings.bind_address, ports[name])
    except OSError:
        for listener in listeners.values():
            listener.close()
        if metrics_socket is not None:
            metrics_socket.close()
        raise
    return listeners, metrics_socket


def _foreground(loaded: inifile.Config, *, detached: bool = False) -> int:
    logs.use_handler(_log_handler(loaded.settings, detached), loaded.settings)
    reason = objectstore.check_output_directory(loaded.settings.output_dir)
    if reason is not None:
        LOG.critical("cannot use output directory %s: %s", loaded.settings.output_dir, reason)
        return EXIT_CANNOT_CREATE
    try:
        watchdog = systemd.watchdog_interval()
    except systemd.SystemdError as exc:
        LOG.critical("%s", exc)
        return EXIT_USAGE
    try:
        context = tls.context_for(loaded.settings)
    except tls.TlsError as exc:
        LOG.critical("cannot set up TLS: %s", exc)
        return EXIT_CONFIG
    try:
        listeners, metrics_socket = _listeners(loaded.settings)
    except (OSError, systemd.SystemdError) as exc:
        LOG.critical("cannot listen: %s", exc)
        return arbiter.EXIT_UNAVAILABLE
    notifier = systemd.Notifier.from_environment()
    return arbiter.Service(
        loaded, context, listeners, notifier, watchdog, metrics_socket=metrics_socket
    ).run()


def _detached(loaded: inifile.Config, pidfile: Path) -> int:
    if systemd.under_systemd() or "INVOCATION_ID" in os.environ or "NOTIFY_SOCKET" in os.environ:
        sys.stderr.write(
            f"{PROGRAM}: --daemon is for hosts without systemd; under systemd run in the"
            " foreground (Type=notify)\n"
        )
        return EXIT_USAGE
    # Imported here: only classic mode needs python-daemon.
    import daemon  # noqa: PLC0415
    import daemon.pidfile  # noqa: PLC0415

    lock = daemon.pidfile.TimeoutPIDLockFile(str(pidfile.absolute()), acquire_timeout=0)
    if lock.is_locked():
        owner = lock.read_pid()
        sys.stderr.write(f"{PROGRAM}: {pidfile} is held by process {owner}: already running?\n")
        return arbiter.EXIT_UNAVAILABLE
    context = daemon.DaemonContext(
        detach_process=True,
        pidfile=lock,
        working_directory=os.getcwd(),
        umask=0o022,
        # Our own handlers queue signals; python-daemon's would end the process at once.
        signal_map={},
    )
    with context:
        return _foreground(loaded, detached=True)
