"""The systemd edge of the daemon: socket activation, sd_notify, watchdog and journald.

Everything except the journal handler is the documented, stable environment protocol of
sd_listen_fds(3), sd_notify(3) and sd_watchdog_enabled(3), written over the standard library.

Journal fields. systemd-python 235's JournalHandler sends MESSAGE, PRIORITY, LOGGER,
THREAD_NAME, PROCESS_NAME, CODE_FILE, CODE_LINE, CODE_FUNC, SYSLOG_IDENTIFIER, and when
present CODE_ARGS, EXCEPTION_TEXT and EXCEPTION_INFO, plus *every* attribute of the
LogRecord (``record.__dict__``), so the keys of ``extra=`` arrive as well, next to ``msg``,
``args``, ``levelname`` and the other lower-case record attributes. journald keeps only
names made of A-Z, 0-9 and ``_`` that start with a letter and are at most 64 characters
long; it drops everything else without a word (checked against journald 252). The handler
from `journal_handler` applies that same rule before sending, so what it sends is what the
journal stores: exactly the upper-case keys of ``extra=`` become fields, and a key such as
``peer_addr`` or ``Peer_Addr`` is not sent at all. Values are sent as ``str(value)``. The
handler's own names (MESSAGE, PRIORITY, LOGGER, CODE_* ...) are not for ``extra=``: the
handler fails on PRIORITY or MESSAGE there, and silently replaces CODE_ARGS.

    log.info("stored %s", uid, extra={"DICOM_CALLING_AET": "CT01", "BYTES": 1234})

dcmrecvd's fields: DICOM_CALLING_AET, DICOM_CALLED_AET, PEER_ADDR, PROXY_ADDR, ASSOC_ID,
SOP_CLASS_UID, SOP_INSTANCE_UID, DIMSE_STATUS, PATH, BYTES, DURATION_MS, REJECT_REASON.
Search them with e.g. ``journalctl DICOM_CALLING_AET=CT01``.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import socket
import stat
import time

from systemd import journal

__all__ = [
    "Notifier",
    "SystemdError",
    "inherited_sockets",
    "journal_handler",
    "under_systemd",
    "watchdog_interval",
]

# The name from before the move to packages: -lc files and journal filters may name it.
log = logging.getLogger("dcmrecvd.systemd")

_LISTEN_FDS_START = 3
_DECIMAL = re.compile(r"[0-9]+")
_JOURNAL_FIELD = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_NOTIFY_FIELD = re.compile(r"[A-Z][A-Z0-9_]*")
# A full notification queue must not stall the main loop for long.
_NOTIFY_TIMEOUT = 1.0


class SystemdError(Exception):
    """The environment systemd gave us is unusable (e.g. a passed fd is not a listening socket)."""


def _decimal(name: str, value: str) -> int:
    # int() would also accept " 3", "+3" and "3_0".
    if not _DECIMAL.fullmatch(value):
        raise SystemdError(f"{name}={value!r} is not a decimal number")
    return int(value)


def _fd_names(names: str | None, count: int) -> list[str]:
    if names is None:
        return ["unknown"] * count
    listed = names.split(":")
    if len(listed) != count:
        raise SystemdError(
            f"LISTEN_FDNAMES={names!r} has {len(listed)} names for LISTEN_FDS={count}"
        )
    return [name or "unknown" for name in listed]


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((kind for test, kind in kinds if test(mode)), f"a file of mode {mode:o}")


def _enum_name(value: int) -> str:
    # socket.family/.type are plain ints for values the socket module has no name for.
    return value.name if isinstance(value, enum.IntEnum) else str(value)


def _listening_stream(fd: int, name: str) -> socket.socket:
    where = f"fd {fd} (name {name!r})"
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        raise SystemdError(f"{where} passed by systemd is not open: {e.strerror}") from e
    os.set_inheritable(fd, False)
    if not stat.S_ISSOCK(mode):
        raise SystemdError(f"{where} is {_file_kind(mode)}, not a listening stream socket")
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        raise SystemdError(f"{where} is a socket that cannot be used: {e.strerror}") from e
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 0
    if sock.type == socket.SOCK_STREAM and listening:
        return sock
    what = f"a {_enum_name(sock.type)} {_enum_name(sock.family)} socket"
    sock.detach()  # the fd stays open: it is systemd's, and closing it is no fix
    if sock.type == socket.SOCK_STREAM:
        raise SystemdError(f"{where} is {what} that is not listening")
    raise SystemdError(f"{where} is {what}, not a listening stream socket (use ListenStream=)")


def inherited_sockets() -> dict[str, list[socket.socket]]:
    """The listening sockets systemd passed us, by FileDescriptorName= (sd_listen_fds_with_names).

    {} when we are not socket-activated, or when the variables were meant for another
    process (LISTEN_PID). The LISTEN_* variables are removed from os.environ in every case,
    and the fds get FD_CLOEXEC, so that no child inherits systemd's sockets or a claim to
    them. Raises SystemdError, leaving every fd open, if any fd is not a listening stream
    socket or the variables are malformed.
    """
    pid = os.environ.pop("LISTEN_PID", None)
    fds = os.environ.pop("LISTEN_FDS", None)
    names = os.environ.pop("LISTEN_FDNAMES", None)
    os.environ.pop("LISTEN_PIDFDID", None)  # set by systemd >= 256 only
    if pid is None or fds is None or _decimal("LISTEN_PID", pid) != os.getpid():
        return {}
    count = _decimal("LISTEN_FDS", fds)
    fd_names = _fd_names(names, count)
    sockets: dict[str, list[socket.socket]] = {}
    try:
        for fd, name in enumerate(fd_names, start=_LISTEN_FDS_START):
            sock = _listening_stream(fd, name)
            sockets.setdefault(name, []).append(sock)
    except SystemdError:
        for inherited in sockets.values():
            for sock in inherited:
                sock.detach()
        raise
    return sockets


class Notifier:
    """Sends sd_notify(3) messages to systemd; does nothing when NOTIFY_SOCKET was not set.

    systemd accepts a message only from a process that NotifyAccess= allows. dcmrecvd's
    unit has NotifyAccess=exec: MAINPID, the foreground process systemd started, and the
    processes systemd starts itself (ExecReload=, `dcmrecvd --reload`) may notify;
    messages from any other pid, the forked workers among them, are dropped by systemd.
    A watchdog ping from a forked child would even prove the wrong process alive under
    NotifyAccess=all. So a Notifier sends only from the process that built it (build it
    after any fork that makes the main process), and is a no-op in processes forked from
    that one. A new socket per
    message means nothing is shared with a forked copy.

    Sending never raises on a socket error: the first failure is logged as a warning, later
    ones at debug level, because losing a notification must not stop the receiver.
    """

    def __init__(self, notify_socket: str | None) -> None:
        """notify_socket is NOTIFY_SOCKET's value: an absolute path or an abstract '@name'."""
        self._pid = os.getpid()
        self._warned = False
        self._address: str | None = None
        if notify_socket is None:
            return
        if notify_socket.startswith("/"):
            self._address = notify_socket
        elif notify_socket.startswith("@") and len(notify_socket) > 1:
            self._address = "\0" + notify_socket[1:]
        else:
            self._warn("NOTIFY_SOCKET=%r is not a path or an abstract socket", notify_socket)

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET"))

    def ready(self) -> None:
        self.send(READY="1")

    def reloading(self) -> None:
        # Type=notify-reload needs the time the reload started, on CLOCK_MONOTONIC in µs.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(RELOADING="1", MONOTONIC_USEC=str(usec))

    def stopping(self) -> None:
        self.send(STOPPING="1")

    def status(self, text: str) -> None:
        """One line of free text for `systemctl status`; line breaks become spaces."""
        self.send(STATUS=text.replace("\n", " "))

    def watchdog(self) -> None:
        self.send(WATCHDOG="1")

    def send(self, **fields: str) -> None:
        """Send VARIABLE=value assignments in one datagram, in the order given.

        A malformed field is a programming error and raises ValueError.
        """
        if not fields:
            raise ValueError("a notification needs at least one field")
        for name, value in fields.items():
            # A newline would start another assignment, e.g. a forged READY=1.
            if not _NOTIFY_FIELD.fullmatch(name) or "\n" in value:
                raise ValueError(f"not a notification field: {name}={value!r}")
        if self._address is None:
            return
        if os.getpid() != self._pid:
            self._warn(
                "not notifying systemd from pid %d: only pid %d may (NotifyAccess=exec)",
                os.getpid(),
                self._pid,
            )
            return
        message = "\n".join(f"{name}={value}" for name, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(_NOTIFY_TIMEOUT)
                sock.sendto(message.encode(), self._address)
        except OSError as e:
            self._warn("could not notify systemd (%s): %s", message.replace("\n", " "), e)

    def _warn(self, fmt: str, *args: object) -> None:
        log.log(logging.DEBUG if self._warned else logging.WARNING, fmt, *args)
        self._warned = True


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of WATCHDOG_USEC), or None without a watchdog.

    None also when WATCHDOG_PID names another process: the watchdog is then not ours.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if usec is None:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None and _decimal("WATCHDOG_PID", pid) != os.getpid():
        return None
    interval = _decimal("WATCHDOG_USEC", usec)
    if interval == 0:
        raise SystemdError("WATCHDOG_USEC=0 is not a watchdog interval")
    return interval / 2_000_000


def under_systemd() -> bool:
    """Whether our stderr is systemd's stream to the journal (JOURNAL_STREAM, systemd.exec(5)).

    False when stderr was redirected, e.g. by a shell started from the service, although
    JOURNAL_STREAM was inherited.
    """
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not (_DECIMAL.fullmatch(device) and _DECIMAL.fullmatch(inode)):
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def _send_journal_fields(message: str, /, **fields: object) -> None:
    # JournalHandler's sender: drop what journald would drop (see the module docstring).
    # Positional-only, because the record's own attributes include "message".
    valid = {name: value for name, value in fields.items() if _JOURNAL_FIELD.fullmatch(name)}
    journal.send(message, **valid)


def journal_handler(identifier: str = "dcmrecvd") -> logging.Handler:
    """A logging handler writing to journald's native socket, fields as in the module docstring."""
    handler: logging.Handler = journal.JournalHandler(
        sender_function=_send_journal_fields, SYSLOG_IDENTIFIER=identifier
    )
    return handler
