"""dcmrecvd as a service: config checks, sd_notify, socket activation, reload, stop, --daemon.

Every test runs the real `dcmrecvd` program. A test-owned AF_UNIX datagram socket plays
systemd's NOTIFY_SOCKET; `systemd-socket-activate` passes a real listening socket.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from dcmrecvd.config import asconfig
from tests.support import dicomgen
from tests.support.daemon import (
    DCMRECVD,
    DEADLINE,
    VERIFICATION,
    Notifications,
    children,
    conf,
    ct,
    dcmrecvd,
    profile_section,
    requestor,
)
from tests.support.journald import private_journald
from tests.support.net import LOCALHOST, free_port
from tests.support.paths import REPO
from tests.support.peers import wait_listening

pytestmark = pytest.mark.slow

# --- the command line --------------------------------------------------------------------


def test_check_config_accepts_the_shipped_file() -> None:
    shipped = REPO / "etc/dcmrecvd/dcmrecvd.conf"
    result = subprocess.run(
        [DCMRECVD, "--config", str(shipped), "--check-config"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "configuration is valid; profile default with 171 presentation contexts" in (
        result.stdout
    )


def test_check_config_names_file_line_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_text("[receiver]\nport = 104\nnaming = random\n")
    result = subprocess.run(
        [DCMRECVD, "--config", str(path), "--check-config"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 78
    assert result.stderr.startswith(f"dcmrecvd: {path}:3: naming: 'random' is not one of:")
    assert result.stdout == ""


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [DCMRECVD, "--config", str(tmp_path / "none.conf")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 78
    assert "cannot read the configuration file: No such file or directory" in result.stderr


@pytest.mark.interop
def test_print_asconfig_is_accepted_by_dcmtk_dcmrecv(tmp_path: Path, dcmtk_dcmrecv: str) -> None:
    text = (
        "[receiver]\nprofile = ct\n"
        "[profile ct]\nsop-classes = Verification CTImageStorage MRImageStorage 1.2.3.4.5\n"
        "transfer-syntaxes = JPEGBaseline8Bit ExplicitVRLittleEndian LittleEndianImplicit\n"
        "roles = CTImageStorage:SCP\nextended-negotiation = MRImageStorage:0101\n"
        "[profile dcmtk]\nasconfig = /etc/dcmtk/storescp.cfg\nasconfig-profile = Default\n"
    )
    path = tmp_path / "d.conf"
    path.write_text(text)
    result = subprocess.run(
        [DCMRECVD, "--config", str(path), "--print-asconfig"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0
    assert result.stderr == ""
    rendered = tmp_path / "rendered.cfg"
    rendered.write_text(result.stdout)
    back = asconfig.parse(result.stdout, str(rendered), context_list_limit=None)
    ct_profile = asconfig.select_profile(back, "ct", str(rendered))
    assert [c.abstract_syntax for c in ct_profile.contexts] == [
        VERIFICATION,
        dicomgen.CT,
        dicomgen.MR,
        "1.2.3.4.5",
    ]
    assert ct_profile.contexts[0].transfer_syntaxes[0] == "1.2.840.10008.1.2.4.50"
    assert ct_profile.roles is not None and ct_profile.extended_negotiation
    for profile in ("ct", "dcmtk"):
        port = free_port()
        proc = subprocess.Popen(
            [dcmtk_dcmrecv, "-xf", str(rendered), profile, str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_listening(port, proc)
        finally:
            proc.terminate()
            proc.wait(timeout=DEADLINE)
            assert proc.stderr is not None
            proc.stderr.close()


def test_print_asconfig_of_the_embedded_default_warns_about_dcmtk_367(tmp_path: Path) -> None:
    result = subprocess.run(
        [DCMRECVD, "--no-config", "--print-asconfig"], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "profile default has 171 presentation contexts; DCMTK 3.6.7 accepts at most 128" in (
        result.stderr
    )
    back = asconfig.parse(result.stdout, "rendered", context_list_limit=None)
    assert len(asconfig.select_profile(back, "default", "rendered").contexts) == 171


# --- sd_notify, watchdog, reload, stop ---------------------------------------------------


def test_notifications_over_a_whole_life(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    with dcmrecvd(tmp_path, conf(port, out), env={"WATCHDOG_USEC": "400000"}) as daemon:
        status = daemon.notify.wait_for(lambda m: "STATUS" in m)
        assert f"on port {port}" in status["STATUS"]
        daemon.notify.wait_for(lambda m: m.get("WATCHDOG") == "1")
        # Only the main process may notify (NotifyAccess=exec: not the workers).
        assert {pid for _, pid in daemon.notify.messages} == {daemon.proc.pid}
        before = time.monotonic_ns() // 1000
        daemon.proc.send_signal(signal.SIGHUP)
        reloading = daemon.notify.wait_for(lambda m: m.get("RELOADING") == "1")
        assert before <= int(reloading["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000
        daemon.notify.wait_for(lambda m: m.get("READY") == "1")
        assert daemon.stop() == 0
        daemon.notify.wait_for(lambda m: m.get("STOPPING") == "1")


def test_reload_is_prompt_even_with_a_long_watchdog(tmp_path: Path) -> None:
    """The main loop waits on the signal queue, not on a watchdog timer."""
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    with dcmrecvd(tmp_path, conf(port, out), env={"WATCHDOG_USEC": "600000000"}) as daemon:
        daemon.proc.send_signal(signal.SIGHUP)
        # Far below the 300 s between watchdog pings and the 5 s status refresh.
        daemon.notify.wait_for(lambda m: m.get("RELOADING") == "1", timeout=4)
        assert daemon.stop() == 0


def test_stop_closes_the_port_and_exits_0(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    with dcmrecvd(tmp_path, conf(port, out)) as daemon:
        assert daemon.stop() == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOCALHOST, port), timeout=2).close()
    assert "dcmrecvd stopped" in daemon.log()


def test_missing_output_directory_fails_at_start(tmp_path: Path) -> None:
    path = tmp_path / "d.conf"
    path.write_text(conf(free_port(), tmp_path / "nonexistent"))
    result = subprocess.run(
        [DCMRECVD, "--config", str(path)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 73
    assert "Directory does not exist" in result.stderr


def test_port_in_use_fails_at_start(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind((LOCALHOST, 0))
        busy.listen()
        path = tmp_path / "d.conf"
        path.write_text(conf(busy.getsockname()[1], tmp_path))
        result = subprocess.run(
            [DCMRECVD, "--config", str(path)], check=False, capture_output=True, text=True
        )
    assert result.returncode == 69
    assert "Address already in use" in result.stderr


@pytest.mark.interop
def test_socket_activation_serves_the_inherited_socket(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    notify = tmp_path / "notify.sock"
    # The configured port is not the one systemd listens on: the inherited socket wins.
    text = conf(free_port(), out)
    prefix = [
        "systemd-socket-activate",
        *("-l", f"{LOCALHOST}:{port}", "--fdname=dicom"),
        *("-E", f"NOTIFY_SOCKET={notify}", "-E", "PATH"),
    ]
    with dcmrecvd(tmp_path, text, prefix=prefix, activated_on=port) as daemon:
        echo = subprocess.run(
            ["echoscu", "-aec", "DCMRECVD", LOCALHOST, str(port)],
            check=False,
            capture_output=True,
            text=True,
        )
        assert echo.returncode == 0, echo.stderr
        assert daemon.stop() == 0
    assert f"listening on {LOCALHOST}:{port} (socket from systemd)" in daemon.log()


def test_reload_under_load(tmp_path: Path) -> None:
    """A running association keeps its profile and directory; new ones get the new ones."""
    port = free_port()
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    both = profile_section("p", "Verification CTImageStorage MRImageStorage")
    with dcmrecvd(tmp_path, conf(port, first, both, profile="p")) as daemon:
        running = requestor(port, [dicomgen.CT, dicomgen.MR])
        assert running.is_established
        try:
            assert running.send_c_store(ct("1.2.3.4.10")).Status == 0x0000
            mr_only = profile_section("p", "Verification MRImageStorage")
            daemon.conf.write_text(conf(port, second, mr_only, profile="p"))
            daemon.proc.send_signal(signal.SIGHUP)
            daemon.notify.wait_for(lambda m: m.get("RELOADING") == "1")
            daemon.notify.wait_for(lambda m: m.get("READY") == "1")
            # The association in progress still stores CT, into the old directory.
            for n in range(11, 16):
                assert running.send_c_store(ct(f"1.2.3.4.{n}")).Status == 0x0000
            status = daemon.notify.wait_for(lambda m: "6 instances" in m.get("STATUS", ""))
            assert "1 associations active, 1 in all" in status["STATUS"]
            assert re.search(
                r"6 instances, [0-9.]+ kB stored; [0-9.]+ [kMGT]?B free", status["STATUS"]
            )
            # A new association has the new profile: CT refused, MR accepted.
            fresh = requestor(port, [dicomgen.CT, dicomgen.MR])
            assert fresh.is_established
            results = {str(cx.abstract_syntax): cx.result for cx in fresh.rejected_contexts}
            assert results == {dicomgen.CT: 3}
            fresh.release()
            # An invalid file is refused; the last good configuration still serves.
            daemon.conf.write_text("[receiver]\nport = many\n")
            daemon.proc.send_signal(signal.SIGHUP)
            daemon.notify.wait_for(lambda m: m.get("RELOADING") == "1")
            daemon.notify.wait_for(lambda m: m.get("READY") == "1")
            again = requestor(port, [dicomgen.CT, dicomgen.MR])
            assert again.is_established
            assert {str(cx.abstract_syntax) for cx in again.accepted_contexts} == {dicomgen.MR}
            again.release()
        finally:
            running.release()
        assert daemon.stop() == 0
    assert visible(first) == [f"CT.1.2.3.4.{n}" for n in range(10, 16)]
    assert visible(second) == []
    assert "reload refused, the running configuration stays in force" in daemon.log()
    assert "dcmrecvd.conf:2: port: not a whole number: 'many'" in daemon.log()


def test_reload_changes_who_may_store(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    ct01 = "[peer ct01]\ncalling-aetitle = CT01\n"
    with dcmrecvd(tmp_path, conf(port, out, ct01)) as daemon:
        stranger = requestor(port, [dicomgen.CT], calling="MR99")
        assert stranger.is_established
        stranger.release()
        daemon.conf.write_text(conf(port, out, ct01, default_policy="reject"))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.notify.wait_for(lambda m: m.get("RELOADING") == "1")
        daemon.notify.wait_for(lambda m: m.get("READY") == "1")
        assert requestor(port, [dicomgen.CT], calling="MR99").is_rejected
        known = requestor(port, [dicomgen.CT], calling="CT01")
        assert known.is_established
        known.release()
        assert daemon.stop() == 0
    assert "MR99 from 127.0.0.1: no [peer] rule matches and default-policy = reject" in (
        daemon.log()
    )


def test_stop_lets_an_association_in_progress_finish(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    with dcmrecvd(tmp_path, conf(port, out, stop_grace="30")) as daemon:
        assoc = requestor(port, [dicomgen.CT])
        assert assoc.is_established
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.notify.wait_for(lambda m: m.get("STOPPING") == "1")
        # No new associations once stopping...
        wait_refused(port)
        # ...but the one in progress still stores and releases.
        assert assoc.send_c_store(ct("1.2.3.4.77")).Status == 0x0000
        assoc.release()
        assert daemon.proc.wait(timeout=DEADLINE) == 0
    assert (out / "CT.1.2.3.4.77").is_file()


def test_stop_aborts_what_outlasts_the_grace_time(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    with dcmrecvd(tmp_path, conf(port, out, stop_grace="1")) as daemon:
        assoc = requestor(port, [dicomgen.CT])
        assert assoc.is_established
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=DEADLINE) == 0
        deadline = time.monotonic() + DEADLINE
        while assoc.is_alive() and time.monotonic() < deadline:
            assoc.join(0.1)
        assert assoc.is_aborted
    assert "aborting association with TESTSCU after 1 s" in daemon.log()


def dataset_size(path: Path) -> int:
    """Bytes after the File Meta group: preamble, DICM, then (0002,0000) UL gives its length."""
    data = path.read_bytes()
    group_length = int.from_bytes(data[140:144], "little")
    return len(data) - (144 + group_length)


def visible(directory: Path) -> list[str]:
    """What a consumer that skips dot files sees in `directory`."""
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def wait_refused(port: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            socket.create_connection((LOCALHOST, port), timeout=1).close()
        except ConnectionRefusedError:
            return
        except ConnectionResetError:
            pass  # queued just before the last copy of the socket closed: try again
        time.sleep(0.05)  # polling interval of the deadline loop
    raise AssertionError(f"port {port} still accepts connections")


# --- classic mode ------------------------------------------------------------------------


def test_classic_daemon_with_pidfile(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    path = tmp_path / "d.conf"
    log = tmp_path / "dcmrecvd.log"
    path.write_text(conf(port, out).replace("destination = stderr", f"destination = {log}"))
    pidfile = tmp_path / "dcmrecvd.pid"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "INVOCATION_ID")}
    command = [DCMRECVD, "--config", str(path), "--daemon", "--pidfile", str(pidfile)]
    first = subprocess.run(
        command, env=env, check=False, capture_output=True, text=True, timeout=DEADLINE
    )
    assert first.returncode == 0, first.stderr
    wait_listening(port)
    pid = int(pidfile.read_text())
    try:
        assert pid != os.getpid()
        echo = subprocess.run(
            ["echoscu", LOCALHOST, str(port)], check=False, capture_output=True, text=True
        )
        assert echo.returncode == 0, echo.stderr
        second = subprocess.run(
            command, env=env, check=False, capture_output=True, text=True, timeout=DEADLINE
        )
        assert second.returncode == 69
        assert f"{pidfile} is held by process {pid}" in second.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DEADLINE
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # polling interval of the deadline loop
    assert not pidfile.exists()
    assert "dcmrecvd stopped" in log.read_text()


def test_classic_daemon_refuses_to_detach_under_systemd(tmp_path: Path) -> None:
    path = tmp_path / "d.conf"
    path.write_text(conf(free_port(), tmp_path))
    result = subprocess.run(
        [DCMRECVD, "--config", str(path), "--daemon", "--pidfile", str(tmp_path / "p")],
        env={**os.environ, "INVOCATION_ID": "0123456789abcdef"},
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--daemon is for hosts without systemd" in result.stderr
    assert not (tmp_path / "p").exists()


# --- journald ----------------------------------------------------------------------------


@pytest.mark.interop
def test_structured_fields_reach_the_journal(tmp_path: Path) -> None:
    """A private journald (root only) receives every association and instance event."""
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    path = tmp_path / "d.conf"
    ct_only = profile_section("p", "Verification CTImageStorage")
    path.write_text(
        conf(port, out, ct_only, profile="p").replace(
            "destination = stderr", "destination = journal"
        )
    )
    files = dicomgen.write_all([dicomgen.Spec(dicomgen.CT, "1.2.3.4.501")], tmp_path / "send")
    notify = Notifications(tmp_path / "notify.sock")
    with private_journald(tmp_path) as journal:
        env = {"PATH": os.environ["PATH"], "NOTIFY_SOCKET": str(notify.path)}
        proc = journal.run([DCMRECVD, "--config", str(path)], env)
        try:
            notify.wait_for(lambda m: m.get("READY") == "1")
            store = subprocess.run(
                [
                    "storescu",
                    "-aet",
                    "CT01",
                    "-aec",
                    "DCMRECVD",
                    LOCALHOST,
                    str(port),
                    *map(str, files),
                ],
                check=False,
                capture_output=True,
                text=True,
            )
            assert store.returncode == 0, store.stderr
            refused = requestor(port, [dicomgen.MR], calling="MR02")
            assert refused.is_rejected
            worker_pids = children(proc.pid)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=DEADLINE) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=DEADLINE)
            notify.close()
        ct01 = journal.entries("SYSLOG_IDENTIFIER=dcmrecvd", "DICOM_CALLING_AET=CT01")
        mr02 = journal.entries(
            "DICOM_CALLING_AET=MR02", "REJECT_REASON=no acceptable presentation contexts"
        )
    by_message = {str(entry["MESSAGE"]): entry for entry in ct01}
    stored = by_message[f"Stored received object to file: {out}/CT.1.2.3.4.501"]
    assert stored["PATH"] == f"{out}/CT.1.2.3.4.501"
    assert int(str(stored["BYTES"])) == dataset_size(out / "CT.1.2.3.4.501")
    response = by_message["Sending C-STORE Response (Success)"]
    assert response["DIMSE_STATUS"] == "0x0000"
    assert response["SOP_INSTANCE_UID"] == "1.2.3.4.501"
    assert response["SOP_CLASS_UID"] == dicomgen.CT
    assert int(str(response["DURATION_MS"])) >= 0
    released = by_message["Received Association Release Request"]
    assert int(str(released["DURATION_MS"])) >= 0
    for entry in ct01:
        assert entry["DICOM_CALLED_AET"] == "DCMRECVD"
        assert str(entry["PEER_ADDR"]) == LOCALHOST
        assert entry["ASSOC_ID"] == stored["ASSOC_ID"]
        # Associations are served by the daemon's worker processes.
        assert int(str(entry["_PID"])) in worker_pids
    assert [e["MESSAGE"] for e in mr02] == [
        "Refusing Association (no acceptable presentation contexts)"
    ]
    assert mr02[0]["ASSOC_ID"] != stored["ASSOC_ID"]


def test_a_path_template_names_what_dcmtk_storescu_sends(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    template = "{PatientID}/{SeriesDate:%Y/%m}/{Modality}.{SOPInstanceUID}{extension}"
    text = conf(port, out, extension=".dcm", path_template=template)
    files = dicomgen.write_all(
        [dicomgen.Spec(dicomgen.CT, f"1.2.3.4.60{n}") for n in range(3)], tmp_path / "send"
    )
    with dcmrecvd(tmp_path, text) as daemon:
        store = subprocess.run(
            ["storescu", "-aec", "DCMRECVD", LOCALHOST, str(port), *map(str, files)],
            check=False,
            capture_output=True,
            text=True,
        )
        assert store.returncode == 0, store.stderr
        assert daemon.stop() == 0
    # dicomgen's objects: PatientID DCMRECVD-1, Series Date 20240115, Modality OT.
    stored = sorted(str(p.relative_to(out)) for p in out.rglob("*.dcm"))
    assert stored == [f"DCMRECVD-1/2024/01/OT.1.2.3.4.60{n}.dcm" for n in range(3)]


def test_the_index_lists_what_is_stored_and_a_start_repairs_it(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "in"
    out.mkdir()
    listing = tmp_path / "index.sqlite"
    text = conf(port, out, extension=".dcm", index=str(listing))
    files = dicomgen.write_all(
        [dicomgen.Spec(dicomgen.CT, f"1.2.3.4.70{n}") for n in range(2)], tmp_path / "send"
    )

    def check_index() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DCMRECVD, "--config", str(tmp_path / "dcmrecvd.conf"), "--check-index"],
            capture_output=True,
            text=True,
            check=False,
        )

    with dcmrecvd(tmp_path, text) as daemon:
        store = subprocess.run(
            ["storescu", "-aet", "CT01", "-aec", "DCMRECVD", LOCALHOST, str(port)]
            + [str(f) for f in files],
            check=False,
            capture_output=True,
            text=True,
        )
        assert store.returncode == 0, store.stderr
        assert daemon.stop() == 0
    assert check_index().returncode == 0
    # Behind the receiver's back: one stored file goes, another object comes.
    (out / "CT.1.2.3.4.700.dcm").unlink()
    dicomgen.write_all([dicomgen.Spec(dicomgen.CT, "1.2.3.4.799")], out)
    found = check_index()
    assert found.returncode == 1
    assert f"listed but gone: {out / 'CT.1.2.3.4.700.dcm'}" in found.stdout
    assert f"not listed: {out / 'obj000.dcm'}" in found.stdout
    again = tmp_path / "again"
    again.mkdir()
    with dcmrecvd(again, text) as daemon:
        assert daemon.stop() == 0
    assert "listed 1 stored object(s) it lacked, dropped 1 that are gone" in daemon.log()
    assert check_index().returncode == 0
    with closing(sqlite3.connect(listing)) as db:
        rows = db.execute(
            "SELECT sop_instance_uid, calling_ae, patient_id FROM objects ORDER BY 1"
        ).fetchall()
    assert rows == [("1.2.3.4.701", "CT01", "DCMRECVD-1"), ("1.2.3.4.799", "", "DCMRECVD-1")]


def test_reload_says_reloading_from_its_own_process_then_signals(tmp_path: Path) -> None:
    # A stand-in for the daemon: prints when SIGHUP comes.
    target = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys\n"
            "signal.signal(signal.SIGHUP, lambda *_: (print('HUP', flush=True), sys.exit(0)))\n"
            "print('ready', flush=True)\n"
            "signal.pause()\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert target.stdout is not None and target.stdout.readline() == "ready\n"
    notify = Notifications(tmp_path / "notify.sock")
    try:
        env = {**os.environ, "NOTIFY_SOCKET": str(notify.path)}
        reload = subprocess.Popen([DCMRECVD, "--reload", str(target.pid)], env=env)
        assert reload.wait(timeout=DEADLINE) == 0
        message = notify.wait_for(lambda m: m.get("RELOADING") == "1")
        assert int(message["MONOTONIC_USEC"]) > 0
        # systemd takes it from the ExecReload= process only (NotifyAccess=exec).
        assert [pid for fields, pid in notify.messages if "RELOADING" in fields] == [reload.pid]
        assert target.stdout.readline() == "HUP\n"
        assert target.wait(timeout=DEADLINE) == 0
        gone = subprocess.run(
            [DCMRECVD, "--reload", str(target.pid)],
            check=False,
            env=env,
            capture_output=True,
            text=True,
        )
        assert gone.returncode == 2
        assert f"cannot signal process {target.pid}" in gone.stderr
        # No reload comes: READY=1 so that systemd does not wait for one.
        notify.wait_for(lambda m: m.get("READY") == "1")
    finally:
        target.kill()
        target.wait()
        notify.close()
