"""HookRunner with real child processes: outcomes, arguments taken literally, timeouts
that kill a hook's whole process group, output that never blocks a hook, and the fields
on every log line. A fake clock stands in wherever a test would wait for a timeout."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import suppress
from pathlib import Path

import pytest

from dcmrecvd.events.hookrunner import LINE_MAX, Finished, HookRunner

LOGGER = "test.hookrunner"
ENV = {"PATH": "/usr/bin:/bin"}
FIELDS = {"HOOK": "notify", "EVENT_ID": "ev-1", "EVENT_KIND": "series-complete"}
# How long a condition that should come true at once may take on a loaded machine.
DEADLINE = 10.0
REPO = Path(__file__).resolve().parents[3]


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.INFO, logger=LOGGER)
    return logging.getLogger(LOGGER)


def open_fds() -> dict[str, str]:
    """This process's file descriptors and what they are."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        with suppress(FileNotFoundError):  # the one listdir used
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return fds


@pytest.fixture
def runner(log: logging.Logger) -> Iterator[HookRunner]:
    """A runner that must have closed every pipe and pidfd when all its hooks are done."""
    before = open_fds()
    hooks = HookRunner(log)
    yield hooks
    hooks.terminate_all(0.0)
    after = open_fds()
    # At most the runner's own selector is new (the rest of the suite may close fds).
    assert len(after.keys() - before.keys()) <= 1
    assert "anon_inode:[pidfd]" not in after.values()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def timed(log: logging.Logger, clock: FakeClock) -> Iterator[HookRunner]:
    """A runner on the fake clock, with a kill grace of 5 (fake) seconds."""
    hooks = HookRunner(log, kill_grace=5.0, clock=clock)
    yield hooks
    hooks.terminate_all(0.0)


def start(
    runner: HookRunner,
    key: Hashable,
    argv: Sequence[str],
    *,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> None:
    runner.start(
        key,
        argv,
        env=ENV if env is None else env,
        timeout=timeout,
        fields=FIELDS,
        name=f"hook-{key}",
    )


def sh(script: str, *args: str) -> list[str]:
    """/bin/sh running `script` with $1, $2 ... set to `args`."""
    return ["/bin/sh", "-c", script, "sh", *args]


def finish(runner: HookRunner, *keys: Hashable) -> dict[Hashable, Finished]:
    """Poll until every one of `keys` has finished."""
    done: dict[Hashable, Finished] = {}
    deadline = time.monotonic() + DEADLINE
    while not set(keys) <= done.keys():
        assert time.monotonic() < deadline, f"still running: {runner.running}"
        done.update(runner.poll(0.05))
    return done


def pump_until(runner: HookRunner, condition: Callable[[], bool]) -> None:
    """Poll (reading output, enforcing timeouts) until `condition` holds; nothing finishes."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "condition never came true"
        assert runner.poll(0.05) == []


def alive(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_dead(*pids: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still alive: {[p for p in pids if alive(p)]}"
        time.sleep(0.01)  # polling interval of the deadline loop, not synchronisation


def read_pid(path: Path) -> int:
    return int(path.read_text())


def written(path: Path, lines: int = 1) -> Callable[[], bool]:
    """Whether `path` holds `lines` complete lines."""
    return lambda: path.exists() and path.read_text().count("\n") >= lines


def messages(caplog: pytest.LogCaptureFixture, prefix: str = "") -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.getMessage().startswith(prefix)
    ]


def test_success_logs_output_and_one_closing_line(
    runner: HookRunner, caplog: pytest.LogCaptureFixture
) -> None:
    start(runner, "a", sh("echo hi; echo there >&2"))
    assert runner.running == {"a"}
    finished = finish(runner, "a")["a"]
    assert finished.ok
    assert finished.status == 0
    assert not finished.timed_out
    assert finished.reason == "exited with status 0"
    assert finished.output_bytes == len(b"hi\nthere\n")
    assert runner.running == frozenset()
    assert messages(caplog, "hook hook-a: ") == ["hook hook-a: hi", "hook hook-a: there"]
    (closing,) = [r for r in caplog.records if "exited with status" in r.getMessage()]
    assert closing.levelno == logging.INFO
    assert closing.getMessage().startswith("hook hook-a exited with status 0 after ")


def test_exit_status(runner: HookRunner, caplog: pytest.LogCaptureFixture) -> None:
    start(runner, "a", sh("exit 3"))
    finished = finish(runner, "a")["a"]
    assert (finished.ok, finished.status, finished.reason) == (False, 3, "exited with status 3")
    (closing,) = [r for r in caplog.records if "exited with status" in r.getMessage()]
    assert closing.levelno == logging.WARNING


def test_killed_by_a_signal(runner: HookRunner) -> None:
    start(runner, "a", sh("kill -9 $$"))
    finished = finish(runner, "a")["a"]
    assert (finished.ok, finished.status, finished.timed_out) == (False, None, False)
    assert finished.reason == "killed by signal 9"


HOSTILE = [
    "two words",
    "'single'",
    '"double"',
    "$(id)",
    "`id`",
    "; rm -rf /",
    "a && b | c > d",
    "$HOME",
    "*",
    "line\nbreak",
    "",
    "-n",
    "ünïcödé ✓",
    "\\",
]


def test_arguments_reach_the_child_unchanged(runner: HookRunner, tmp_path: Path) -> None:
    # A shell would split, expand or run some of these; each must arrive as it was.
    out = tmp_path / "argv.json"
    code = "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"
    start(runner, "a", [sys.executable, "-c", code, str(out), *HOSTILE])
    assert finish(runner, "a")["a"].ok
    assert json.loads(out.read_text()) == HOSTILE


def test_environment_is_exactly_the_one_given(
    runner: HookRunner, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"PATH": "/usr/bin:/bin", "ODD": "a b;$(c)"}
    start(runner, "a", ["/usr/bin/env"], env=env)
    assert finish(runner, "a")["a"].ok
    assert sorted(messages(caplog, "hook hook-a: ")) == sorted(
        f"hook hook-a: {k}={v}" for k, v in env.items()
    )


@pytest.mark.parametrize(
    ("program", "why"),
    [
        ("/nonexistent/hook", "No such file or directory"),
        ("not-executable", "Permission denied"),
        ("directory", "Permission denied"),
    ],
)
def test_cannot_start(
    runner: HookRunner,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    program: str,
    why: str,
) -> None:
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\nexit 0\n")
    plain.chmod(0o644)
    (tmp_path / "directory").mkdir()
    path = program if program.startswith("/") else str(tmp_path / program)
    start(runner, "a", [path, "x"])
    assert runner.running == {"a"}
    with pytest.raises(ValueError, match="already running"):
        start(runner, "a", ["/bin/true"])
    assert runner.poll(5.0) == [
        (
            "a",
            Finished(
                ok=False,
                status=None,
                timed_out=False,
                reason=f"cannot start: {why}: {path}",
                seconds=0.0,
                output_bytes=0,
            ),
        )
    ]
    assert runner.running == frozenset()
    (closing,) = [r for r in caplog.records if r.name == LOGGER]
    assert closing.levelno == logging.WARNING
    assert closing.getMessage() == f"hook hook-a cannot start: {why}: {path}"
    # The key is free again.
    start(runner, "a", ["/bin/true"])
    assert finish(runner, "a")["a"].ok


def test_an_argument_with_nul_cannot_start(runner: HookRunner) -> None:
    start(runner, "a", ["/bin/echo", "a\0b"])
    ((key, finished),) = runner.poll(5.0)
    assert key == "a"
    assert not finished.ok
    assert finished.reason.startswith("cannot start: ")


def test_a_running_key_cannot_start_again(runner: HookRunner) -> None:
    start(runner, "a", sh("read x"))  # stdin is /dev/null: ends at once
    with pytest.raises(ValueError, match="already running"):
        start(runner, "a", ["/bin/true"])
    assert finish(runner, "a")["a"].status == 1


def test_timeout_kills_the_whole_process_group(
    timed: HookRunner, clock: FakeClock, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    start(
        timed, "a", sh('sleep 1000 & echo $! >> "$1"; echo $$ >> "$1"; wait', str(pids)), timeout=10
    )
    pump_until(timed, written(pids, 2))
    child, hook = map(int, pids.read_text().split())
    clock.now += 9.5
    assert timed.poll(0.1) == []
    clock.now += 0.5
    finished = finish(timed, "a")["a"]
    assert (finished.ok, finished.timed_out) == (False, True)
    assert finished.reason == "killed after its timeout of 10 s"
    assert finished.seconds == pytest.approx(10.0)
    wait_dead(hook, child)


def test_a_hook_that_ignores_sigterm_is_killed_after_the_grace(
    timed: HookRunner, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    start(timed, "a", sh("trap '' TERM; echo ready; sleep 1000"), timeout=2.5)
    pump_until(timed, lambda: "hook hook-a: ready" in messages(caplog))
    clock.now += 2.5
    assert timed.poll(0.2) == []  # SIGTERM, ignored
    clock.now += 4.5
    assert timed.poll(0.2) == []
    assert timed.running == {"a"}
    clock.now += 0.5
    finished = finish(timed, "a")["a"]
    assert (finished.status, finished.timed_out) == (None, True)
    assert finished.reason == "killed after its timeout of 2.5 s"
    (closing,) = [r for r in caplog.records if "timeout" in r.getMessage()]
    assert closing.levelno == logging.WARNING
    assert closing.getMessage() == "hook hook-a killed after its timeout of 2.5 s"


def test_a_hook_that_closed_its_output_is_reaped_when_it_exits(
    runner: HookRunner, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    start(
        runner,
        "a",
        sh('exec >&- 2>&-; while [ ! -e "$1" ]; do sleep 0.01; done; exit 4', str(go)),
    )
    assert runner.poll(0.2) == []
    go.touch()
    assert finish(runner, "a")["a"].status == 4


def test_a_hook_that_closed_its_output_still_times_out(
    timed: HookRunner, clock: FakeClock, tmp_path: Path
) -> None:
    pid = tmp_path / "pid"
    start(timed, "a", sh('echo $$ > "$1"; exec >&- 2>&-; exec sleep 1000', str(pid)), timeout=1)
    pump_until(timed, written(pid))
    clock.now += 1
    assert finish(timed, "a")["a"].timed_out
    wait_dead(read_pid(pid))


def test_children_left_behind_do_not_hold_the_run(runner: HookRunner, tmp_path: Path) -> None:
    # The background sleep holds the pipe open; the run ends with the hook and kills it.
    pid = tmp_path / "pid"
    start(runner, "a", sh('sleep 1000 & echo $! > "$1"; echo done', str(pid)))
    finished = finish(runner, "a")["a"]
    assert finished.ok
    assert finished.output_bytes == len(b"done\n")
    wait_dead(read_pid(pid))


def test_a_verbose_hook_never_blocks_and_is_logged_up_to_the_limit(
    log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    runner = HookRunner(log, output_limit=10_050)
    code = "import sys; sys.stdout.buffer.write((b'y' * 99 + b'\\n') * 200_000)"
    start(runner, "a", [sys.executable, "-c", code])
    finished = finish(runner, "a")["a"]
    assert finished.ok
    assert finished.output_bytes == 20_000_000
    lines = messages(caplog, "hook hook-a: y")
    # 100 whole lines, then the 50 bytes of the next one up to the limit.
    assert lines == ["hook hook-a: " + "y" * 99] * 100 + ["hook hook-a: " + "y" * 50]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["hook hook-a: output past 10050 bytes not logged"]
    assert messages(caplog, "hook hook-a: 2") == ["hook hook-a: 20000000 bytes of output in all"]


def test_long_lines_come_in_pieces_blank_ones_not_at_all_and_bad_utf8_is_replaced(
    runner: HookRunner, caplog: pytest.LogCaptureFixture
) -> None:
    code = (
        "import sys; out = sys.stdout.buffer; "
        "out.write(b'a' * 5000 + b'\\n\\n\\r\\n'); out.write(b'caf\\xc3\\xa9 \\xff\\r\\n'); "
        "out.write(b'z' * 9000)"
    )
    start(runner, "a", [sys.executable, "-c", code])
    assert finish(runner, "a")["a"].ok
    prefix = "hook hook-a: "
    assert messages(caplog, prefix) == [
        prefix + "a" * LINE_MAX,
        prefix + "a" * (5000 - LINE_MAX),
        prefix + "café \ufffd",
        prefix + "z" * LINE_MAX,
        prefix + "z" * LINE_MAX,
        prefix + "z" * (9000 - 2 * LINE_MAX),
    ]


def test_several_hooks_run_at_once(runner: HookRunner, tmp_path: Path) -> None:
    # Each one waits until all have started: they pass only if they run together.
    count = 5
    code = (
        "import os, sys, time; d = sys.argv[1]; open(os.path.join(d, sys.argv[2]), 'w').close()\n"
        "end = time.monotonic() + 10\n"
        "while len(os.listdir(d)) < int(sys.argv[3]):\n"
        "    if time.monotonic() > end: sys.exit(1)\n"
        "    time.sleep(0.01)\n"
    )
    for number in range(count):
        start(runner, number, [sys.executable, "-c", code, str(tmp_path), str(number), str(count)])
    assert runner.running == set(range(count))
    done = finish(runner, *range(count))
    assert all(finished.ok for finished in done.values())


def test_terminate_all(runner: HookRunner, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    start(runner, "polite", sh('echo $$ >> "$1"; exec sleep 1000', str(pids)))
    start(runner, "stubborn", sh('trap "" TERM; echo $$ >> "$1"; sleep 1000', str(pids)))
    quick = tmp_path / "quick"
    start(runner, "quick", sh('echo $$ > "$1"; exit 0', str(quick)))
    start(runner, "missing", ["/nonexistent/hook"])
    deadline = time.monotonic() + DEADLINE
    # The quick one has exited (a zombie until reaped) before terminate_all: it keeps
    # its own outcome. No poll here, which would report it.
    while not (written(pids, 2)() and written(quick)() and not alive(read_pid(quick))):
        assert time.monotonic() < deadline
        time.sleep(0.01)  # polling interval of the deadline loop, not synchronisation
    done = dict(runner.terminate_all(0.3))
    assert runner.running == frozenset()
    assert done.keys() == {"polite", "stubborn", "quick", "missing"}
    assert done["quick"].ok
    assert done["missing"].reason.startswith("cannot start: ")
    for key in ("polite", "stubborn"):
        assert (done[key].ok, done[key].status, done[key].reason) == (False, None, "stopped")
    wait_dead(*map(int, pids.read_text().split()))


def test_log_lines_carry_the_fields(runner: HookRunner, caplog: pytest.LogCaptureFixture) -> None:
    start(runner, "a", sh("echo one; exit 2"))
    start(runner, "b", ["/nonexistent/hook"])
    finish(runner, "a", "b")
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [r.getMessage().split(" after ")[0] for r in records] == [
        "hook hook-b cannot start: No such file or directory: /nonexistent/hook",
        "hook hook-a: one",
        "hook hook-a exited with status 2",
    ]
    for record in records:
        for name, value in FIELDS.items():
            assert getattr(record, name) == value
    # On the closing lines only; "" where there is no exit status.
    assert [getattr(r, "HOOK_STATUS", None) for r in records] == ["", None, "2"]


def test_a_hook_dies_with_the_events_process(tmp_path: Path) -> None:
    pid = tmp_path / "pid"
    events_process = (
        "import logging, sys\n"
        "from dcmrecvd.events.hookrunner import HookRunner\n"
        "runner = HookRunner(logging.getLogger())\n"
        "argv = ['/bin/sh', '-c', 'echo $$ > \"$1\"; exec sleep 1000', 'sh', sys.argv[1]]\n"
        "runner.start('k', argv, env={}, timeout=1000, fields={}, name='orphan')\n"
        "while True:\n"
        "    runner.poll(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", events_process, str(pid)], env={**ENV, "PYTHONPATH": str(REPO)}
    )
    try:
        deadline = time.monotonic() + DEADLINE
        while not written(pid)():
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.01)  # polling interval of the deadline loop, not synchronisation
    finally:
        parent.kill()
        parent.wait()
    wait_dead(read_pid(pid))


def test_the_hook_starts_with_no_signal_blocked_or_ignored(
    runner: HookRunner, caplog: pytest.LogCaptureFixture
) -> None:
    # As a daemon's process may have them; a hook ignoring SIGTERM would need SIGKILL.
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        start(runner, "a", ["/bin/grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGTERM, previous)
    assert finish(runner, "a")["a"].ok
    assert messages(caplog, "hook hook-a: ") == [
        "hook hook-a: SigBlk:\t0000000000000000",
        "hook hook-a: SigIgn:\t0000000000000000",
    ]


def test_poll_returns_as_soon_as_a_hook_finishes(runner: HookRunner) -> None:
    start(runner, "a", ["/bin/true"])
    began = time.monotonic()
    assert [key for key, _ in runner.poll(DEADLINE)] == ["a"]
    assert time.monotonic() - began < DEADLINE / 2


def test_poll_waits_at_most_its_wait(runner: HookRunner) -> None:
    start(runner, "a", ["/bin/sleep", "1000"])
    began = time.monotonic()
    assert runner.poll(0.2) == []
    assert 0.2 <= time.monotonic() - began < 2.0
    assert runner.running == {"a"}
