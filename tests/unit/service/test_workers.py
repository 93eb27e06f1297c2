"""dcmrecvd's worker processes: forked, counted together, replaced, retired, watched."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.support import dicomgen
from tests.support.daemon import DEADLINE, children, conf, ct, dcmrecvd, requestor
from tests.support.net import free_port

pytestmark = pytest.mark.slow


def wait_children(pid: int, test: object, what: str) -> set[int]:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        found = children(pid)
        if test(found):  # type: ignore[operator]
            return found
        time.sleep(0.05)  # polling interval of the deadline loop, not synchronisation
    raise AssertionError(f"not reached within {DEADLINE} s: {what}")


def test_workers_are_forked_and_only_the_parent_notifies(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    with dcmrecvd(tmp_path, conf(port, out, workers="3")) as daemon:
        assert len(children(daemon.proc.pid)) == 3
        status = daemon.notify.wait_for(lambda m: "STATUS" in m)
        assert status["STATUS"].endswith("; 3 workers")
        assoc = requestor(port, [dicomgen.CT])
        assert assoc.send_c_store(ct("1.2.3.4.1")).Status == 0x0000
        assoc.release()
        daemon.notify.wait_for(lambda m: "1 instances" in m.get("STATUS", ""))
        assert daemon.stop() == 0
    assert {pid for _, pid in daemon.notify.messages} == {daemon.proc.pid}
    assert (out / "CT.1.2.3.4.1").is_file()


def test_the_association_limit_holds_across_workers(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    with dcmrecvd(tmp_path, conf(port, out, workers="2", max_associations="1")) as daemon:
        first = requestor(port, [dicomgen.CT])
        assert first.is_established
        # Whichever worker takes them, the others are over the one shared limit.
        for _ in range(4):
            assert requestor(port, [dicomgen.CT]).is_rejected
        first.release()
        assert daemon.stop() == 0


def test_a_killed_worker_is_replaced_and_its_associations_stop_counting(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    with dcmrecvd(tmp_path, conf(port, out, workers="1", max_associations="1")) as daemon:
        (worker,) = children(daemon.proc.pid)
        doomed = requestor(port, [dicomgen.CT])
        assert doomed.is_established
        os.kill(worker, signal.SIGKILL)
        (replacement,) = wait_children(
            daemon.proc.pid, lambda pids: len(pids) == 1 and worker not in pids, "a new worker"
        )
        # The dead worker's association no longer holds the only place.
        fresh = requestor(port, [dicomgen.CT])
        assert fresh.is_established
        assert fresh.send_c_store(ct("1.2.3.4.2")).Status == 0x0000
        fresh.release()
        assert daemon.stop() == 0
    assert replacement != worker
    assert f"worker {worker} ended with status -9; starting another" in daemon.log()
    assert (out / "CT.1.2.3.4.2").is_file()


def test_the_watchdog_stops_while_a_worker_hangs(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    env = {"WATCHDOG_USEC": "400000"}
    with dcmrecvd(tmp_path, conf(port, out, workers="2"), env=env) as daemon:
        daemon.notify.wait_for(lambda m: m.get("WATCHDOG") == "1")
        worker = min(children(daemon.proc.pid))
        os.kill(worker, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            # Pings may go on until the hung worker's last beat is HEALTHY_AGE (3 s) old;
            # after that, none while it hangs.
            daemon.notify.wait_for(lambda m: "STATUS" in m)
            quiet_from = stopped + 3.5
            late: list[dict[str, str]] = []
            while time.monotonic() < quiet_from + 2.0:
                fields = daemon.notify.wait_for(lambda m: True)
                if time.monotonic() > quiet_from:
                    late.append(fields)
            assert late
            assert not [m for m in late if m.get("WATCHDOG") == "1"]
        finally:
            os.kill(worker, signal.SIGCONT)
        daemon.notify.wait_for(lambda m: m.get("WATCHDOG") == "1")
        assert daemon.stop() == 0


def test_a_reload_retires_the_old_workers_after_their_associations(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    with dcmrecvd(tmp_path, conf(port, out, workers="1")) as daemon:
        (old,) = children(daemon.proc.pid)
        running = requestor(port, [dicomgen.CT])
        assert running.is_established
        daemon.conf.write_text(conf(port, out, workers="2"))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.notify.wait_for(lambda m: m.get("READY") == "1")
        new = wait_children(daemon.proc.pid, lambda pids: len(pids) == 3, "two new workers")
        # The old worker finishes the association it has, then leaves.
        assert running.send_c_store(ct("1.2.3.4.3")).Status == 0x0000
        running.release()
        wait_children(daemon.proc.pid, lambda pids: pids == new - {old}, "the old worker gone")
        assert daemon.stop() == 0
    assert (out / "CT.1.2.3.4.3").is_file()
