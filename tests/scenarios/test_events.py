"""Completion, manifests and hooks in the real daemon: several workers, several peers,
restarts, kills, and hooks that fail, hang, print a lot or get hostile values."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import dicomgen, waiting
from tests.support.daemon import Daemon, children, conf, dcmrecvd, requestor
from tests.support.net import LOCALHOST, free_port

DEADLINE = 30.0
CT = dicomgen.CT

# A hook that records its arguments and environment, one JSON line per run; it waits
# while the file named by HOLD exists (the test removes it), and exits with EXIT.
RECORDER = """\
import json, os, sys, time
log = os.environ.get("RECORD") or sys.argv[1]
entry = {"argv": sys.argv, "event_id": os.environ["DCMRECVD_EVENT_ID"],
         "manifest": json.load(open(os.environ["DCMRECVD_MANIFEST"]))}
with open(log, "a") as file:
    file.write(json.dumps({"start": entry["event_id"]}) + "\\n")
hold = os.path.join(os.path.dirname(log), "hold")
deadline = time.monotonic() + 60
while os.path.exists(hold) and time.monotonic() < deadline:
    time.sleep(0.05)
with open(log, "a") as file:
    file.write(json.dumps(entry) + "\\n")
"""


def wait_until(test: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    return waiting.found(test, what, timeout)


@dataclass
class Setup:
    tmp: Path
    port: int
    out: Path
    index: Path
    events: Path
    log: Path

    def manifests(self) -> list[dict[str, Any]]:
        new = self.events / "new"
        if not new.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(new.iterdir())]

    def runs(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def deliveries(self) -> list[tuple[str, str, str, int]]:
        with closing(sqlite3.connect(self.index)) as db:
            return db.execute(
                "SELECT e.kind, d.target, d.state, d.attempts FROM deliveries d"
                " JOIN events e USING (seq) ORDER BY d.seq, d.target"
            ).fetchall()


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    out = tmp_path / "in"
    out.mkdir()
    (tmp_path / "recorder.py").write_text(RECORDER)
    return Setup(
        tmp_path,
        free_port(),
        out,
        tmp_path / "index.sqlite",
        tmp_path / ".events",
        tmp_path / "hook.log",
    )


def config(setup: Setup, extra: str = "", **receiver: str) -> str:
    hook = (
        "[hook recorder]\nevent = study-complete\n"
        f"command = {sys.executable} {setup.tmp / 'recorder.py'} {setup.log}\n"
    )
    sections = (
        "[completion]\nseries-quiet = 1s\nstudy-quiet = 2s\n"
        "[events]\nmanifests = series-complete study-complete\n"
        f"{hook}{extra}"
    )
    return conf(setup.port, setup.out, sections, index=str(setup.index), workers="2", **receiver)


def instance(study: str, series: str, number: int, **values: str) -> Any:
    ds = dicomgen.part10(dicomgen.Spec(CT, f"{series}.{number}"))
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.Modality = "CT"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def send(port: int, calling: str, datasets: list[Any]) -> None:
    assoc = requestor(port, [CT], calling=calling)
    assert assoc.is_established
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert status.Status == 0
    finally:
        assoc.release()


def send_interleaved(port: int, plan: dict[str, list[Any]]) -> None:
    """One association per calling AE title, all at once."""
    failures: list[BaseException] = []

    def run(calling: str, datasets: list[Any]) -> None:
        try:
            send(port, calling, datasets)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=item) for item in plan.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert not failures, failures


def kinds(manifests: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [
        (m["event"], m.get("series_instance_uid") or m["study_instance_uid"], m["generation"])
        for m in manifests
    ]


PLAN = {
    "CT1": [instance("1.9.1", "1.9.1.1", n) for n in range(4)]
    + [instance("1.9.2", "1.9.2.1", n) for n in range(2)],
    "CT2": [instance("1.9.2", "1.9.2.1", n) for n in range(2, 5)]
    + [instance("1.9.1", "1.9.1.2", n) for n in range(3)],
    "MR1": [instance("1.9.1", "1.9.1.2", n) for n in range(3, 5)],
}


def test_interleaved_studies_complete_once_each_and_a_late_instance_reopens(
    setup: Setup,
) -> None:
    with dcmrecvd(setup.tmp, config(setup)) as daemon:
        send_interleaved(setup.port, PLAN)
        wait_until(lambda: len(setup.runs()) == 4, "the hook ran for both studies")
        found = kinds(setup.manifests())
        assert sorted(found) == [
            ("series-complete", "1.9.1.1", 1),
            ("series-complete", "1.9.1.2", 1),
            ("series-complete", "1.9.2.1", 1),
            ("study-complete", "1.9.1", 1),
            ("study-complete", "1.9.2", 1),
        ]
        # Each study's series come before it (names are in event order).
        assert found.index(("series-complete", "1.9.1.2", 1)) < found.index(
            ("study-complete", "1.9.1", 1)
        )
        studies = {
            m["study_instance_uid"]: m for m in setup.manifests() if m["event"] == "study-complete"
        }
        assert studies["1.9.1"]["instances"] == 9 and studies["1.9.1"]["series"] == 2
        assert studies["1.9.1"]["calling_aetitles"] == ["CT1", "CT2", "MR1"]
        assert sorted(f["sop_instance_uid"] for f in studies["1.9.2"]["files"]) == [
            f"1.9.2.1.{n}" for n in range(5)
        ]
        for manifest in studies.values():
            for file in manifest["files"]:
                assert Path(file["path"]).is_file()
        finished = [run for run in setup.runs() if "manifest" in run]
        assert sorted(run["manifest"]["study_instance_uid"] for run in finished) == [
            "1.9.1",
            "1.9.2",
        ]
        assert {run["event_id"] for run in finished} == {m["id"] for m in studies.values()}
        # A late instance: the series and the study complete again, generation 2.
        send(setup.port, "CT1", [instance("1.9.1", "1.9.1.1", 99)])
        wait_until(lambda: len(setup.runs()) == 6, "the hook ran again for the study")
        again = kinds(setup.manifests())[5:]
        assert again == [("series-complete", "1.9.1.1", 2), ("study-complete", "1.9.1", 2)]
        last = setup.manifests()[-1]
        assert last["instances"] == 10
        # The hook wrote its line before it exited: its delivery is done a moment later.
        wait_until(
            lambda: all(state == "done" for _kind, _target, state, _n in setup.deliveries()),
            "every delivery done",
        )
        assert daemon.stop() == 0
    # Nothing pending, nothing twice.
    assert len(setup.manifests()) == 7


def test_a_restart_between_receipt_and_completion_completes_once(setup: Setup) -> None:
    text = (
        config(setup)
        .replace("series-quiet = 1s", "series-quiet = 3s")
        .replace("study-quiet = 2s", "study-quiet = 4s")
    )
    files = []
    for n in range(3):
        files.append(setup.tmp / f"send{n}.dcm")
        instance("1.9.3", "1.9.3.1", n).save_as(files[-1], enforce_file_format=True)
    with dcmrecvd(setup.tmp, text) as daemon:
        # DCMTK's storescu, a sender nobody here wrote.
        sent = subprocess.run(
            ["storescu", "-aet", "CT1", "-aec", "DCMRECVD", LOCALHOST, str(setup.port)]
            + [str(f) for f in files],
            capture_output=True,
            text=True,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        assert daemon.stop() == 0
    assert setup.manifests() == []
    again = setup.tmp / "again"
    again.mkdir()
    with dcmrecvd(again, text) as daemon:
        wait_until(lambda: len(setup.runs()) == 2, "the study's hook after the restart")
        assert kinds(setup.manifests()) == [
            ("series-complete", "1.9.3.1", 1),
            ("study-complete", "1.9.3", 1),
        ]
        assert daemon.stop() == 0


def killed(daemon: Daemon) -> None:
    """kill -9 the daemon and every process it forked, as systemd kills a cgroup."""
    pids = [daemon.proc.pid, *children(daemon.proc.pid)]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    daemon.proc.wait(DEADLINE)


def test_kill_9_during_a_hook_delivers_the_same_event_again(setup: Setup) -> None:
    hold = setup.tmp / "hold"
    hold.touch()
    text = config(setup)
    with dcmrecvd(setup.tmp, text) as daemon:
        send(setup.port, "CT1", [instance("1.9.4", "1.9.4.1", 0)])
        started = wait_until(setup.runs, "the hook started")
        hooks = setup.events / "hooks"
        assert len(list(hooks.iterdir())) == 1
        killed(daemon)
    first = started[0]["start"]
    # The hook died with the events process (PDEATHSIG), before it could finish.
    hold.unlink()
    assert [run for run in setup.runs() if "manifest" in run] == []
    again = setup.tmp / "again"
    again.mkdir()
    with dcmrecvd(again, text) as daemon:
        done = wait_until(
            lambda: [run for run in setup.runs() if "manifest" in run], "the hook ran again"
        )
        assert done[0]["event_id"] == first
        assert done[0]["manifest"]["id"] == first
        wait_until(
            lambda: all(state == "done" for _k, _t, state, _n in setup.deliveries()),
            "every delivery done",
        )
        assert list((setup.events / "hooks").iterdir()) == []
        assert daemon.stop() == 0
    assert [run["start"] for run in setup.runs() if "start" in run] == [first, first]


HOOKS = """\
[hook fails]
event = study-complete
command = /bin/sh -c "echo failing; exit 3"
retries = 2
retry-delay = 0.2s
[hook hangs]
event = study-complete
command = /bin/sleep 600
timeout = 1s
retries = 0
[hook verbose]
event = study-complete
command = /bin/sh -c "yes 0123456789abcdef | head -c 5000000; echo; echo the end"
"""


def test_failing_hanging_and_verbose_hooks(setup: Setup) -> None:
    with dcmrecvd(setup.tmp, config(setup, HOOKS)) as daemon:
        send(setup.port, "CT1", [instance("1.9.5", "1.9.5.1", 0)])

        def ended() -> list[tuple[str, str, str, int]] | None:
            found = setup.deliveries()
            over = len(found) == 6 and all(state != "pending" for _k, _t, state, _n in found)
            return found if over else None

        states = wait_until(ended, "every delivery ended")
        by_target = {(kind, target): (state, n) for kind, target, state, n in states}
        assert by_target[("study-complete", "hook:fails")] == ("failed", 3)
        assert by_target[("study-complete", "hook:hangs")] == ("failed", 1)
        assert by_target[("study-complete", "hook:verbose")] == ("done", 1)
        assert by_target[("study-complete", "hook:recorder")] == ("done", 1)
        assert daemon.stop() == 0
    log = daemon.log()
    assert log.count("hook fails: failing") == 3
    assert "hook fails failed for study-complete event" in log and "not tried again" in log
    assert "killed after its timeout of 1 s" in log
    assert "hook verbose: output past" in log
    assert len(log) < 1_000_000


HOSTILE = {
    "PatientID": "x; touch pwned $(touch pwned2) `id` \"a b\" 'c' -rf",
    "PatientName": "Evil^$(reboot)",
}


def test_hostile_values_stay_one_argument_and_reach_no_shell(setup: Setup) -> None:
    command = (
        f"command = {sys.executable} {setup.tmp / 'recorder.py'} {setup.log}"
        " --patient={PatientID} -- {PatientID} {SOPInstanceUID} {CallingAETitle} {manifest}"
    )
    extra = f"[hook each]\nevent = instance-stored\n{command}\n"
    text = config(setup, extra)
    with dcmrecvd(setup.tmp, text) as daemon:
        send(setup.port, "A;$(id) B", [instance("1.9.6", "1.9.6.1", 0, **HOSTILE)])
        runs = wait_until(
            lambda: [r for r in setup.runs() if "manifest" in r and len(r["argv"]) > 2],
            "the instance hook ran",
        )
        assert daemon.stop() == 0
    argv = runs[0]["argv"]
    assert argv[1:] == [
        str(setup.log),
        f"--patient={HOSTILE['PatientID']}",
        "--",
        HOSTILE["PatientID"],
        "1.9.6.1.0",
        "A;$(id) B",
        argv[-1],
    ]
    assert argv[-1].startswith(str(setup.events / "hooks"))
    for name in ("pwned", "pwned2"):
        assert not (setup.tmp / name).exists() and not Path(name).exists()


def reload(daemon: Daemon, text: str) -> None:
    daemon.conf.write_text(text)
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.notify.wait_for(lambda m: m.get("RELOADING") == "1")
    daemon.notify.wait_for(lambda m: m.get("READY") == "1")


def test_reload_starts_and_stops_the_events_process_and_keeps_the_index(setup: Setup) -> None:
    plain = conf(setup.port, setup.out, index=str(setup.index), workers="2")
    with dcmrecvd(setup.tmp, plain) as daemon:
        assert len(children(daemon.proc.pid)) == 2
        reload(daemon, config(setup))
        wait_until(lambda: len(children(daemon.proc.pid)) == 3, "an events process")
        send(setup.port, "CT1", [instance("1.9.7", "1.9.7.1", 0)])
        wait_until(lambda: len(setup.manifests()) == 2, "both manifests")
        # Another index would split the listing: refused, the running one stays.
        moved = config(setup).replace(str(setup.index), str(setup.tmp / "other.sqlite"))
        reload(daemon, moved)
        send(setup.port, "CT1", [instance("1.9.7", "1.9.7.1", 1)])
        wait_until(lambda: len(setup.manifests()) == 4, "the study again, generation 2")
        assert not (setup.tmp / "other.sqlite").exists()
        reload(daemon, plain)
        wait_until(lambda: len(children(daemon.proc.pid)) == 2, "no events process")
        assert daemon.stop() == 0
    assert "changing [receiver] index takes a restart" in daemon.log()
    assert kinds(setup.manifests())[2:] == [
        ("series-complete", "1.9.7.1", 2),
        ("study-complete", "1.9.7", 2),
    ]
