"""dcmrecvd: the receiver as a systemd service, or as a classic daemon.

Signal handlers only queue the signal; the main loop acts on it (reload, stop), so that
no lock is ever taken inside a handler and a reload is never delayed by a timer. A
reload builds a new Receiver on the same listening socket and then retires the old
one: new associations get the new configuration at once, associations in progress
finish on the one they started with, and a configuration that does not load is logged
and refused while the old one goes on serving.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import queue
import shutil
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from dcmrecvd import __version__, asconfig, config, logs, systemd, tls
from dcmrecvd.access import Admission
from dcmrecvd.scp import Receiver, check_output_directory
from dcmrecvd.server import Listener, Serving
from dcmrecvd.settings import DCMTK_CONTEXT_LIST_LIMIT, Settings
from dcmrecvd.stats import Stats

PROGRAM = "dcmrecvd"
LOG = logging.getLogger("dcmrecv.daemon")

EXIT_OK = 0
EXIT_USAGE = 2
# sysexits.h: EX_CONFIG (systemd's RestartPreventExitStatus can name it) and friends.
EXIT_CONFIG = 78
EXIT_CANNOT_CREATE = 73
EXIT_UNAVAILABLE = 69
# The socket systemd passes, by FileDescriptorName= of dcmrecvd.socket.
SOCKET_NAME = "dicom"
TLS_SOCKET_NAME = "dicom-tls"
# The name of the configuration that --no-config gives.
EMBEDDED = "<embedded defaults>"
# How often STATUS= is refreshed when no watchdog asks for more.
STATUS_INTERVAL = 2.0


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="DICOM storage receiver (the dcmrecv receiver as a system service).",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--config",
        type=Path,
        default=config.DEFAULT_PATH,
        metavar="FILE",
        help=f"INI configuration file (default: {config.DEFAULT_PATH})",
    )
    source.add_argument(
        "--no-config",
        action="store_true",
        help="read no file: the embedded defaults (every storage SOP class, port 11112,"
        " files into ./incoming)",
    )
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument(
        "--check-config",
        action="store_true",
        help="check the configuration, print what is wrong (file:line: reason) and exit",
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
    args = _arguments(argv)
    try:
        loaded = _read(EMBEDDED if args.no_config else str(args.config))
    except config.ConfigError as exc:
        sys.stderr.write(f"{PROGRAM}: {exc}\n")
        return EXIT_CONFIG
    if args.check_config:
        return _check(loaded)
    if args.print_asconfig:
        return _print_asconfig(loaded)
    if args.daemon:
        return _detached(loaded, args.pidfile)
    return _foreground(loaded)


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _read(path: str) -> config.Config:
    return config.parse("", EMBEDDED) if path == EMBEDDED else config.load(path)


def _check(loaded: config.Config) -> int:
    try:
        _tls_context(loaded.settings)
    except tls.TlsError as exc:
        sys.stderr.write(f"{PROGRAM}: {loaded.path}: [tls]: {exc}\n")
        return EXIT_CONFIG
    # Only a warning: under systemd, StateDirectory= creates the directory at start.
    reason = check_output_directory(loaded.settings.output_dir)
    if reason is not None:
        sys.stderr.write(
            f"{PROGRAM}: warning: {loaded.path}: output-directory"
            f" {loaded.settings.output_dir}: {reason}\n"
        )
    sys.stdout.write(
        f"{PROGRAM}: {loaded.path}: configuration is valid; profile {loaded.profile.name}"
        f" with {len(loaded.profile.contexts)} presentation contexts\n"
    )
    return EXIT_OK


def _print_asconfig(loaded: config.Config) -> int:
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
    return EXIT_OK


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


def _listeners(settings: Settings) -> dict[str, Listener]:
    """The plain listener, and the TLS one when [tls] is configured: systemd's sockets
    by name when it passes them, else bound here."""
    inherited = systemd.inherited_sockets()
    wanted = [SOCKET_NAME, *([TLS_SOCKET_NAME] if settings.tls is not None else [])]
    # A socket unit without FileDescriptorName= passes "unknown": that is the plain one.
    if SOCKET_NAME not in inherited and "unknown" in inherited:
        inherited[SOCKET_NAME] = inherited.pop("unknown")
    listeners: dict[str, Listener] = {}
    for name in wanted:
        sockets = inherited.get(name, [])
        if sockets:
            listeners[name] = Listener(sockets.pop(0), inherited=True)
    for extra in (sock for group in inherited.values() for sock in group):
        LOG.warning("ignoring an inherited socket not named %s: %s", " or ".join(wanted), extra)
        extra.close()
    ports = {SOCKET_NAME: settings.port, TLS_SOCKET_NAME: settings.tls_port}
    try:
        for name in wanted:
            if name not in listeners:
                listeners[name] = Listener.bind(settings.bind_address, ports[name])
    except OSError:
        for listener in listeners.values():
            listener.close()
        raise
    return listeners


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    return None if settings.tls is None else tls.server_context(settings.tls)


def _foreground(loaded: config.Config, *, detached: bool = False) -> int:
    logs.use_handler(_log_handler(loaded.settings, detached), loaded.settings)
    reason = check_output_directory(loaded.settings.output_dir)
    if reason is not None:
        LOG.critical("cannot use output directory %s: %s", loaded.settings.output_dir, reason)
        return EXIT_CANNOT_CREATE
    try:
        watchdog = systemd.watchdog_interval()
    except systemd.SystemdError as exc:
        LOG.critical("%s", exc)
        return EXIT_USAGE
    try:
        context = _tls_context(loaded.settings)
    except tls.TlsError as exc:
        LOG.critical("cannot set up TLS: %s", exc)
        return EXIT_CONFIG
    try:
        listeners = _listeners(loaded.settings)
    except (OSError, systemd.SystemdError) as exc:
        LOG.critical("cannot listen: %s", exc)
        return EXIT_UNAVAILABLE
    notifier = systemd.Notifier.from_environment()
    return Service(loaded, context, listeners, notifier, watchdog).run()


def _detached(loaded: config.Config, pidfile: Path) -> int:
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
        return EXIT_UNAVAILABLE
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


class Service:
    """The daemon's main loop: serve, reload on SIGHUP, drain on SIGTERM."""

    def __init__(
        self,
        loaded: config.Config,
        context: ssl.SSLContext | None,
        listeners: dict[str, Listener],
        notifier: systemd.Notifier,
        watchdog: float | None,
    ) -> None:
        self.loaded = loaded
        self.watchdog = watchdog
        self.listeners = listeners
        self.notifier = notifier
        self.stats = Stats()
        self.admission = Admission()
        self.current = self._serving(loaded, context)
        # Only at start: later, the temporary files in the spool are ours, in use.
        self.current[0].receiver.sweep_spool()
        self.retired: list[Serving] = []
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()

    def _serving(self, loaded: config.Config, context: ssl.SSLContext | None) -> list[Serving]:
        """One receiver, accepting on the plain listener and, with its context, on TLS's."""
        receiver = Receiver(
            loaded.settings,
            loaded.profile,
            peer_profiles=loaded.peer_profiles,
            stats=self.stats,
            admission=self.admission,
        )
        servings = [Serving(receiver, self.listeners[SOCKET_NAME])]
        if context is not None:
            servings.append(Serving(receiver, self.listeners[TLS_SOCKET_NAME], context))
        return servings

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.put(signum)  # SimpleQueue.put is safe in a signal handler

    def run(self) -> int:
        for handled in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(handled, self._on_signal)
        for name, listener in self.listeners.items():
            host, port = listener.address
            LOG.info(
                "dcmrecvd %s listening on %s:%d%s%s as %s with profile %s",
                __version__,
                host,
                port,
                " with TLS" if name == TLS_SOCKET_NAME else "",
                " (socket from systemd)" if listener.inherited else "",
                self.loaded.settings.aetitle,
                self.loaded.profile.name,
            )
        self.notifier.ready()
        self._status()
        while True:
            try:
                signum: int | None = self._signals.get(
                    timeout=min(self.watchdog or STATUS_INTERVAL, STATUS_INTERVAL)
                )
            except queue.Empty:
                signum = None
            if signum == signal.SIGHUP:
                self.reload()
            elif signum in (signal.SIGTERM, signal.SIGINT):
                return self.stop()
            self._retire_idle()
            if self.watchdog is not None and all(s.accepting for s in self.current):
                self.notifier.watchdog()
            self._status()

    def reload(self) -> None:
        """Serve new associations with the configuration as the file says now."""
        self.notifier.reloading()
        try:
            loaded = _read(self.loaded.path)
            reason = check_output_directory(loaded.settings.output_dir)
            if reason is not None:
                raise config.ConfigError(
                    loaded.path, None, f"output-directory {loaded.settings.output_dir}: {reason}"
                )
            if (loaded.settings.tls is None) != (TLS_SOCKET_NAME not in self.listeners):
                raise config.ConfigError(
                    loaded.path, None, "adding or removing [tls] takes a restart"
                )
            # Certificates and keys are read again here, so a renewed one takes effect.
            context = _tls_context(loaded.settings)
        except (config.ConfigError, tls.TlsError) as exc:
            LOG.error("reload refused, the running configuration stays in force: %s", exc)
        else:
            self._warn_unreloadable(loaded.settings)
            new = self._serving(loaded, context)
            for serving in self.current:
                serving.stop_accepting()
            self.retired.extend(self.current)
            self.current, self.loaded = new, loaded
            logs.set_level(loaded.settings)
            LOG.info("reloaded %s: profile %s", loaded.path, loaded.profile.name)
        self.notifier.ready()

    def _warn_unreloadable(self, new: Settings) -> None:
        old = self.loaded.settings
        changed = [
            name
            for name in ("port", "bind_address", "tls_port", "log_destination")
            if getattr(old, name) != getattr(new, name)
        ]
        if changed:
            LOG.warning(
                "%s changed: that takes a restart (systemctl restart dcmrecvd)", ", ".join(changed)
            )

    def _retire_idle(self) -> None:
        self.retired = [s for s in self.retired if s.associations()]

    def _status(self) -> None:
        servings = [*self.current, *self.retired]
        active = sum(len(s.associations()) for s in servings)
        totals = self.stats.totals()
        try:
            free = _size(shutil.disk_usage(self.loaded.settings.output_dir).free) + " free"
        except OSError as exc:
            free = f"free space unknown: {exc.strerror}"
        self.notifier.status(
            f"{self.loaded.settings.aetitle} on port"
            f" {', '.join(str(listener.address[1]) for listener in self.listeners.values())},"
            f" profile {self.loaded.profile.name}: {active} associations active,"
            f" {totals.associations} in all; {totals.instances} instances,"
            f" {_size(totals.bytes)} stored; {free}"
        )

    def stop(self) -> int:
        """Accept no more; give associations in progress the grace time, abort the rest."""
        self.notifier.stopping()
        servings = [*self.current, *self.retired]
        for serving in servings:
            serving.stop_accepting()
        for listener in self.listeners.values():
            listener.close()
        grace = self.loaded.settings.stop_grace
        deadline = time.monotonic() + grace
        running = []
        for assoc in (a for s in servings for a in s.associations()):
            # A connection that has not asked for an association yet has nothing to finish.
            if assoc.is_established:
                running.append(assoc)
            else:
                assoc.abort()
        if running:
            LOG.info("waiting up to %d s for %d associations to finish", grace, len(running))
        for assoc in running:
            assoc.join(max(0.0, deadline - time.monotonic()))
        left = [a for a in running if a.is_alive()]
        for assoc in left:
            LOG.warning("aborting association with %s after %d s", assoc.requestor.ae_title, grace)
            assoc.abort()
        for assoc in left:
            assoc.join(5)
        LOG.info("dcmrecvd stopped")
        return EXIT_OK
