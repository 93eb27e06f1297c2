"""Hook commands run as child processes of the events process, several at once, no threads.

The events process is single-threaded, so nothing here may block it for long: `poll`
waits on one selector for every hook's output pipe and its pidfd (readable once the
process has exited), so it wakes for output, for an exit, or at the next timeout.

Each hook runs without a shell, in a process group (and session) of its own, with
stdout and stderr on one pipe. Its output is logged line by line, up to `output_limit`
bytes per run; the rest is read and dropped, so a verbose hook never blocks on a full
pipe. At its timeout the whole group gets SIGTERM, and SIGKILL `kill_grace` seconds
later. The child gets PR_SET_PDEATHSIG SIGKILL, so that a hook dies with the events
process: a restarted daemon must not deliver the same event twice at once.

When a run ends. A hook has finished when its own process has exited, even if its
stdout was closed long before, or children it left behind still hold the pipe. Then
what the pipe holds is read without blocking, the pipe is closed, and the process
group gets SIGKILL: a hook's background children do not outlive it. The kill goes out
before the hook is reaped, while its zombie still holds its pid as the group's id, so
it cannot reach an unrelated group that reused the number.

`clock` measures the hooks' timeouts; the waits of `poll` and `terminate_all` are real
seconds. The process reaps its hooks through their Popen objects, so nothing else in
it may reap children (os.wait, waitpid(-1), SIGCHLD set to SIG_IGN).
"""

from __future__ import annotations

import ctypes
import logging
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)
# A longer line is logged in pieces of this many bytes.
LINE_MAX = 4096
# Finished.reason of a run that terminate_all ended.
STOPPED = "stopped"
# One read; a pipe holds 64 KiB unless resized.
_CHUNK = 65536
# What is read from the pipe of a hook that has exited: a child of it that left its
# process group (and so outlived the kill) may write on and on.
_DRAIN_MAX = 1 << 20
_PIPE = "pipe"
_EXIT = "exit"


@dataclass(frozen=True)
class Finished:
    """How one run ended."""

    ok: bool  # exited with status 0
    status: int | None  # exit status; None if it never started or was killed by a signal
    timed_out: bool
    # For the log: "exited with status 3", "killed by signal 9", "killed after its
    # timeout of 10 s", "cannot start: <strerror>", "stopped" (terminate_all).
    reason: str
    seconds: float
    output_bytes: int  # all bytes it wrote (stdout and stderr), logged or not


@dataclass
class _Output:
    """A run's output: split into lines and logged, up to `limit` bytes."""

    log: logging.Logger
    name: str
    fields: Mapping[str, str]
    limit: int
    total: int = 0
    _pending: bytearray = field(default_factory=bytearray)
    _overflowed: bool = False

    def write(self, data: bytes) -> None:
        room = max(self.limit - self.total, 0)
        self.total += len(data)
        self._pending += data[:room]
        *lines, rest = self._pending.split(b"\n")
        for line in lines:
            self._emit(line)
        whole = len(rest) - len(rest) % LINE_MAX
        self._emit(rest[:whole])
        self._pending = bytearray(rest[whole:])
        if len(data) > room and not self._overflowed:
            self._overflowed = True
            self._flush()
            self.log.warning(
                "hook %s: output past %d bytes not logged", self.name, self.limit, extra=self.fields
            )

    def close(self) -> None:
        self._flush()
        if self._overflowed:
            self.log.info(
                "hook %s: %d bytes of output in all", self.name, self.total, extra=self.fields
            )

    def _flush(self) -> None:
        if self._pending:
            self._emit(self._pending)
            self._pending = bytearray()

    def _emit(self, line: bytes | bytearray) -> None:
        """Log `line` (without its newline), in pieces of at most LINE_MAX bytes; a blank
        line is not logged."""
        line = line.removesuffix(b"\r")
        for start in range(0, len(line), LINE_MAX):
            text = line[start : start + LINE_MAX].decode("utf-8", errors="replace")
            self.log.info("hook %s: %s", self.name, text, extra=self.fields)


@dataclass
class _Run:
    """One hook command that has started and not yet been reaped."""

    key: Hashable
    name: str
    fields: Mapping[str, str]
    timeout: float
    started: float  # clock()
    process: subprocess.Popen[bytes]
    pipe: int | None  # None once at its end
    pidfd: int
    output: _Output
    terminated_at: float | None = None  # clock() at the timeout's SIGTERM
    killed: bool = False  # SIGKILL after the timeout
    stopping: bool = False  # terminate_all


class HookRunner:
    """Runs hook commands by key; `poll` reports each run once it has finished."""

    def __init__(
        self,
        log: logging.Logger,
        *,
        output_limit: int = 65536,
        kill_grace: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._output_limit = output_limit
        self._kill_grace = kill_grace
        self._clock = clock
        self._selector = selectors.DefaultSelector()
        self._runs: dict[Hashable, _Run] = {}
        # Finished and not yet returned by poll: the starts that failed.
        self._done: list[tuple[Hashable, Finished]] = []

    @property
    def running(self) -> frozenset[Hashable]:
        """The keys from start() until poll (or terminate_all) returns them."""
        return frozenset(self._runs) | {key for key, _ in self._done}

    def start(
        self,
        key: Hashable,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout: float,
        fields: Mapping[str, str],
        name: str,
    ) -> None:
        """Start `argv` (already expanded; never a shell) under `key`, which must not be
        running. A start that fails does not raise: the next poll reports it."""
        if key in self.running:
            raise ValueError(f"hook {name}: {key!r} is already running")
        started = self._clock()
        try:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                close_fds=True,
                start_new_session=True,
                env=dict(env),
                # preexec_fn is unsafe in a threaded process (the child may inherit a
                # held lock); the events process has one thread, and prctl must run in
                # the child itself. One thread matters for PR_SET_PDEATHSIG as well: it
                # fires when the thread that forked ends, not the process.
                preexec_fn=partial(_in_child, os.getpid(), _ignored_signals()),  # noqa: PLW1509
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self._cannot_start(key, name, fields, _why(exc))
            return
        assert process.stdout is not None
        pipe = process.stdout.fileno()
        try:
            pidfd = os.pidfd_open(process.pid)
        except OSError as exc:
            # Not watched, it must not run: the kill comes before the reaping (see above).
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
            process.stdout.close()
            self._cannot_start(key, name, fields, _why(exc))
            return
        os.set_blocking(pipe, False)
        run = _Run(
            key=key,
            name=name,
            fields=fields,
            timeout=timeout,
            started=started,
            process=process,
            pipe=pipe,
            pidfd=pidfd,
            output=_Output(log=self._log, name=name, fields=fields, limit=self._output_limit),
        )
        self._selector.register(pipe, selectors.EVENT_READ, (run, _PIPE))
        self._selector.register(pidfd, selectors.EVENT_READ, (run, _EXIT))
        self._runs[key] = run

    def poll(self, wait: float) -> list[tuple[Hashable, Finished]]:
        """What finished since the last call; waits at most `wait` seconds for something
        to finish, reading output and enforcing timeouts meanwhile."""
        end = time.monotonic() + wait
        while True:
            remaining = 0.0 if self._done else max(end - time.monotonic(), 0.0)
            self._step(self._until_deadline(remaining))
            if self._done or time.monotonic() >= end:
                done, self._done = self._done, []
                return done

    def terminate_all(self, grace: float) -> list[tuple[Hashable, Finished]]:
        """Stop every run: SIGTERM to each process group, SIGKILL to those still alive
        `grace` seconds later. What had already finished keeps its own outcome; the rest
        are reported "stopped"."""
        done = self.poll(0.0)
        for run in self._runs.values():
            run.stopping = True
            _signal_group(run.process.pid, signal.SIGTERM)
        end = time.monotonic() + grace
        while self._runs and (remaining := end - time.monotonic()) > 0:
            self._step(remaining)
        for run in self._runs.values():
            _signal_group(run.process.pid, signal.SIGKILL)
        while self._runs:
            self._step(None)
        done += self._done
        self._done = []
        return done

    def _until_deadline(self, wait: float) -> float:
        """`wait`, or less if a timeout's signal is due sooner."""
        now = self._clock()
        for run in self._runs.values():
            due = self._due(run)
            if due is not None:
                wait = min(wait, max(due - now, 0.0))
        return wait

    def _due(self, run: _Run) -> float | None:
        """clock() at which the run's next timeout signal is due; None: none is."""
        if run.stopping or run.killed:
            return None
        if run.terminated_at is None:
            return run.started + run.timeout
        return run.terminated_at + self._kill_grace

    def _step(self, timeout: float | None) -> None:
        """Wait for output or exits at most `timeout` seconds (None: no limit), then handle
        them and the timeouts that are due."""
        exited = []
        for selected, _ in self._selector.select(timeout):
            run, kind = selected.data
            if kind == _PIPE:
                self._read(run)
            else:
                exited.append(run)
        for run in exited:
            self._end(run)
        self._enforce_timeouts()

    def _read(self, run: _Run) -> None:
        assert run.pipe is not None
        try:
            data = os.read(run.pipe, _CHUNK)
        except BlockingIOError:
            return
        if data:
            run.output.write(data)
        else:
            self._close_pipe(run)

    def _close_pipe(self, run: _Run) -> None:
        """At the end of the output: the process itself may run on."""
        assert run.pipe is not None and run.process.stdout is not None
        self._selector.unregister(run.pipe)
        run.process.stdout.close()
        run.pipe = None

    def _drain(self, run: _Run) -> None:
        """Read what the pipe holds now, without waiting for more."""
        read = 0
        while run.pipe is not None and read < _DRAIN_MAX:
            try:
                data = os.read(run.pipe, _CHUNK)
            except BlockingIOError:
                return
            if not data:
                self._close_pipe(run)
                return
            read += len(data)
            run.output.write(data)

    def _enforce_timeouts(self) -> None:
        now = self._clock()
        for run in self._runs.values():
            due = self._due(run)
            if due is None or now < due:
                continue
            if run.terminated_at is None:
                run.terminated_at = now
                _signal_group(run.process.pid, signal.SIGTERM)
            else:
                run.killed = True
                _signal_group(run.process.pid, signal.SIGKILL)

    def _end(self, run: _Run) -> None:
        """The hook's process has exited: kill its leftovers, reap it and report it."""
        _signal_group(run.process.pid, signal.SIGKILL)
        returncode = run.process.wait()
        self._drain(run)
        if run.pipe is not None:
            self._close_pipe(run)
        run.output.close()
        self._selector.unregister(run.pidfd)
        os.close(run.pidfd)
        del self._runs[run.key]
        status = returncode if returncode >= 0 else None
        if run.stopping:
            reason = STOPPED
        elif run.terminated_at is not None:
            reason = f"killed after its timeout of {run.timeout:g} s"
        elif status is None:
            reason = f"killed by signal {-returncode}"
        else:
            reason = f"exited with status {status}"
        finished = Finished(
            ok=status == 0 and not run.stopping and run.terminated_at is None,
            status=status,
            timed_out=run.terminated_at is not None,
            reason=reason,
            seconds=self._clock() - run.started,
            output_bytes=run.output.total,
        )
        # The reason of a timeout already says how long it ran.
        self._report(run.key, run.name, run.fields, finished, timed=not finished.timed_out)

    def _cannot_start(self, key: Hashable, name: str, fields: Mapping[str, str], why: str) -> None:
        finished = Finished(
            ok=False,
            status=None,
            timed_out=False,
            reason=f"cannot start: {why}",
            seconds=0.0,
            output_bytes=0,
        )
        self._report(key, name, fields, finished, timed=False)

    def _report(
        self,
        key: Hashable,
        name: str,
        fields: Mapping[str, str],
        finished: Finished,
        *,
        timed: bool,
    ) -> None:
        """Log the run's one closing line, with its duration if `timed`, and queue it for
        poll."""
        # "": no exit status (a signal, or it never started).
        extra = {**fields, "HOOK_STATUS": "" if finished.status is None else str(finished.status)}
        level = logging.INFO if finished.ok else logging.WARNING
        if timed:
            self._log.log(
                level,
                "hook %s %s after %.1f s",
                name,
                finished.reason,
                finished.seconds,
                extra=extra,
            )
        else:
            self._log.log(level, "hook %s %s", name, finished.reason, extra=extra)
        self._done.append((key, finished))


def _why(exc: BaseException) -> str:
    """The text after "cannot start: "."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


def _ignored_signals() -> tuple[int, ...]:
    """The signals this process ignores, which a child would inherit through exec."""
    return tuple(
        number
        for number in signal.valid_signals()
        if number not in (signal.SIGKILL, signal.SIGSTOP)
        and signal.getsignal(number) == signal.SIG_IGN
    )


def _in_child(parent: int, ignored: tuple[int, ...]) -> None:
    """Between fork and exec: die with the events process, and start with the signals a
    program expects (a daemon's blocked or ignored SIGTERM would defeat the timeout)."""
    # It fails only on a bad argument; nothing could be logged from here anyway.
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the events process died before prctl
        os.kill(os.getpid(), signal.SIGKILL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    for number in ignored:
        signal.signal(number, signal.SIG_DFL)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    """Send `signum` to the process group that hook `pid` leads, if any of it is left."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
