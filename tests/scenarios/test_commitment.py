"""Storage Commitment in the real daemon, with pynetdicom as the modality: the report on
the request's association and on a new one, a modality that is down when its report is
due, a restart with reports pending, re-reading files, and commitment off."""

from __future__ import annotations

import os
import signal
import sqlite3
import urllib.request
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import commitment as modality
from tests.support import dicomgen, waiting
from tests.support.daemon import DCMRECVD, Notifications, conf, ct, dcmrecvd, requestor
from tests.support.journald import private_journald
from tests.support.net import free_port

pytestmark = pytest.mark.slow

CT = dicomgen.CT
MR = dicomgen.MR
DEADLINE = 30.0


@dataclass
class Setup:
    tmp: Path
    port: int
    out: Path
    index: Path
    # Where the modality takes reports on new associations.
    report_port: int

    def config(self, commitment: str = "", more: str = "", **receiver: str) -> str:
        extra = (
            f"{more}[commitment]\n{commitment}"
            "[peer modality]\ncalling-aetitle = MODALITY\n"
            f"commitment-host = 127.0.0.1\ncommitment-port = {self.report_port}\n"
        )
        return conf(self.port, self.out, extra, index=str(self.index), workers="2", **receiver)

    def requests(self) -> list[tuple[str, str, int]]:
        """(transaction UID, state, failed attempts) of every request in the index."""
        with closing(sqlite3.connect(self.index)) as db:
            return db.execute(
                "SELECT transaction_uid, state, attempts FROM commitments ORDER BY id"
            ).fetchall()

    def state(self, transaction: str) -> str:
        """The state of the request `transaction` ("" when there is none)."""
        return next((state for uid, state, _ in self.requests() if uid == transaction), "")

    def attempts(self, transaction: str) -> int:
        """Its failed deliveries so far."""
        return next((tries for uid, _, tries in self.requests() if uid == transaction), 0)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    out = tmp_path / "in"
    out.mkdir()
    return Setup(tmp_path, free_port(), out, tmp_path / "index.sqlite", free_port())


def store(port: int, uids: list[str], sop_class: str = CT) -> None:
    assoc = requestor(port, [sop_class], calling="MODALITY")
    assert assoc.is_established
    try:
        for uid in uids:
            ds = ct(uid) if sop_class == CT else dicomgen.part10(dicomgen.Spec(sop_class, uid))
            assert assoc.send_c_store(ds).Status == 0
    finally:
        assoc.release()


def ask(port: int, transaction: str, refs: list[tuple[str, str]], **options: object) -> None:
    assoc = modality.associate(port, **options)  # type: ignore[arg-type]
    assert assoc.is_established
    try:
        assert modality.ask(assoc, transaction, refs) == 0x0000
    finally:
        assoc.release()


def report_of(reports: modality.Reports, transaction: str) -> modality.Received:
    [found] = waiting.found(
        lambda: reports.of(transaction), f"the report of {transaction}", DEADLINE
    )
    return found


def test_the_report_on_the_requests_own_association(setup: Setup) -> None:
    uids = [f"1.2.826.0.1.3680043.10.1.{n}" for n in range(3)]
    with dcmrecvd(setup.tmp, setup.config()):
        store(setup.port, uids)
        here = modality.Reports()
        assoc = modality.associate(setup.port, report_here=here)
        assert assoc.is_established
        try:
            never_sent = "1.2.826.0.1.3680043.10.1.99"
            refs = [(CT, uid) for uid in [*uids, never_sent]]
            assert modality.ask(assoc, "1.2.826.0.1.3680043.10.9.1", refs) == 0x0000
            report = report_of(here, "1.2.826.0.1.3680043.10.9.1")
        finally:
            assoc.release()
        assert report.same_association
        assert report.event_type == 2
        assert report.stored() == [(CT, uid) for uid in uids]
        assert report.failed() == [(CT, never_sent, 0x0112)]
        assert report.information.RetrieveAETitle == "DCMRECVD"
        waiting.until(
            lambda: setup.state("1.2.826.0.1.3680043.10.9.1") == "done",
            "the request marked delivered",
        )
        assert setup.attempts("1.2.826.0.1.3680043.10.9.1") == 0


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The daemon's metrics now: (sample name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=DEADLINE) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_report_on_a_new_association_with_the_reasons_of_failures(setup: Setup) -> None:
    uids = [f"1.2.826.0.1.3680043.10.2.{n}" for n in range(4)]
    there = modality.Reports()
    metrics_port = free_port()
    text = setup.config(more=f"[metrics]\nport = {metrics_port}\n")
    with dcmrecvd(setup.tmp, text), modality.report_scp(setup.report_port, there):
        store(setup.port, uids)
        transaction = "1.2.826.0.1.3680043.10.9.2"
        ask(setup.port, transaction, [(CT, uid) for uid in uids])
        everything = report_of(there, transaction)
        assert not everything.same_association
        assert everything.calling_ae == "DCMRECVD"
        assert (everything.event_type, everything.failed()) == (1, [])
        assert everything.stored() == [(CT, uid) for uid in uids]
        # Deleted from disk, asked under another SOP class, never sent.
        (setup.out / f"CT.{uids[0]}").unlink()
        transaction = "1.2.826.0.1.3680043.10.9.3"
        refs = [(CT, uids[0]), (MR, uids[1]), (CT, uids[2]), (CT, "1.2.826.0.1.3680043.10.2.99")]
        ask(setup.port, transaction, refs)
        mixed = report_of(there, transaction)
        assert mixed.event_type == 2
        assert mixed.stored() == [(CT, uids[2])]
        assert mixed.failed() == [
            (CT, uids[0], 0x0112),
            (MR, uids[1], 0x0119),
            (CT, "1.2.826.0.1.3680043.10.2.99", 0x0112),
        ]
        # Counted by the workers (requests) and the commitment process (reports).
        reports = ("dcmrecvd_commitment_reports_total", (("route", "new-association"),))
        waiting.until(lambda: metrics(metrics_port).get(reports) == 2, "2 reports counted")
        counted = metrics(metrics_port)
        assert counted[("dcmrecvd_commitment_requests_total", (("result", "accepted"),))] == 2
        stored = ("dcmrecvd_commitment_instances_total", (("result", "stored"),))
        failed = ("dcmrecvd_commitment_instances_total", (("result", "failed"),))
        assert (counted[stored], counted[failed]) == (5, 3)
        pending = ("dcmrecvd_commitment_pending", ())
        waiting.until(lambda: metrics(metrics_port).get(pending) == 0, "none pending")


def test_a_modality_down_when_its_report_is_due_gets_it_once_back(setup: Setup) -> None:
    uid = "1.2.826.0.1.3680043.10.3.1"
    transaction = "1.2.826.0.1.3680043.10.9.4"
    with dcmrecvd(setup.tmp, setup.config("retry-delay = 1s\n")) as daemon:
        store(setup.port, [uid])
        ask(setup.port, transaction, [(CT, uid)])
        # Nothing listens on its port: the first delivery fails and is retried.
        waiting.until(lambda: setup.attempts(transaction) >= 1, "a failed delivery", DEADLINE)
        assert setup.state(transaction) == "pending"
        there = modality.Reports()
        with modality.report_scp(setup.report_port, there):
            report = report_of(there, transaction)
            waiting.until(lambda: setup.state(transaction) == "done", "marked delivered")
        assert report.stored() == [(CT, uid)]
        assert len(there.of(transaction)) == 1
    assert "Storage Commitment report not delivered" in daemon.log()


def test_pending_reports_survive_a_restart(setup: Setup) -> None:
    uid = "1.2.826.0.1.3680043.10.4.1"
    transaction = "1.2.826.0.1.3680043.10.9.5"
    text = setup.config("retry-delay = 2s\n")
    with dcmrecvd(setup.tmp, text) as first:
        store(setup.port, [uid])
        ask(setup.port, transaction, [(CT, uid)])
        waiting.until(lambda: setup.attempts(transaction) >= 1, "a failed delivery", DEADLINE)
        assert first.stop() == 0
    assert setup.state(transaction) == "pending"
    there = modality.Reports()
    again = setup.tmp / "again"  # the second run's own notify socket
    again.mkdir()
    with modality.report_scp(setup.report_port, there), dcmrecvd(again, text):
        report = report_of(there, transaction)
        assert report.stored() == [(CT, uid)]
        waiting.until(lambda: setup.state(transaction) == "done", "marked delivered")


def test_verify_rereads_each_file(setup: Setup) -> None:
    uids = ["1.2.826.0.1.3680043.10.5.1", "1.2.826.0.1.3680043.10.5.2"]
    there = modality.Reports()
    with (
        dcmrecvd(setup.tmp, setup.config("verify = yes\n")),
        modality.report_scp(setup.report_port, there),
    ):
        store(setup.port, uids)
        (setup.out / f"CT.{uids[1]}").write_bytes(b"overwritten behind the receiver's back")
        transaction = "1.2.826.0.1.3680043.10.9.6"
        ask(setup.port, transaction, [(CT, uid) for uid in uids])
        report = report_of(there, transaction)
        assert report.stored() == [(CT, uids[0])]
        assert report.failed() == [(CT, uids[1], 0x0110)]


def test_without_commitment_the_sop_class_is_not_accepted(setup: Setup) -> None:
    text = conf(setup.port, setup.out, index=str(setup.index))
    with dcmrecvd(setup.tmp, text):
        assoc = modality.associate(setup.port)
        try:
            assert not assoc.is_established
            assert assoc.is_rejected
        finally:
            if assoc.is_established:
                assoc.release()


@pytest.mark.interop
def test_requests_and_reports_carry_their_fields_in_the_journal(setup: Setup) -> None:
    """A private journald (root only): the request's line from a worker, the failed
    delivery's and the report's from the commitment process, tied by their fields."""
    uid = "1.2.826.0.1.3680043.10.7.1"
    transaction = "1.2.826.0.1.3680043.10.9.7"
    path = setup.tmp / "d.conf"
    path.write_text(
        setup.config("retry-delay = 1s\n").replace("destination = stderr", "destination = journal")
    )
    notify = Notifications(setup.tmp / "notify.sock")
    there = modality.Reports()
    with private_journald(setup.tmp) as journal:
        # PYTHONPATH too: the daemon must run the code under test.
        kept = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
        proc = journal.run(
            [DCMRECVD, "--config", str(path)], {**kept, "NOTIFY_SOCKET": str(notify.path)}
        )
        try:
            notify.wait_for(lambda m: m.get("READY") == "1")
            store(setup.port, [uid])
            ask(setup.port, transaction, [(CT, uid), (CT, "1.2.826.0.1.3680043.10.7.2")])
            waiting.until(lambda: setup.attempts(transaction) >= 1, "a failed delivery")
            with modality.report_scp(setup.report_port, there):
                report_of(there, transaction)
                waiting.until(lambda: setup.state(transaction) == "done", "marked delivered")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=DEADLINE) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=DEADLINE)
            notify.close()
        entries = journal.entries("SYSLOG_IDENTIFIER=dcmrecvd", f"TRANSACTION_UID={transaction}")
    by_start = {str(e["MESSAGE"]).split(":")[0].split(" for ")[0]: e for e in entries}
    received = by_start["Received Storage Commitment Request"]
    failed = by_start["Storage Commitment report not delivered"]
    sent = by_start["Sent Storage Commitment Report to MODALITY@127.0.0.1"]
    assert received["COMMITMENT_ID"] == failed["COMMITMENT_ID"] == sent["COMMITMENT_ID"]
    assert received["DICOM_CALLING_AET"] == sent["DICOM_CALLING_AET"] == "MODALITY"
    assert received["PEER_ADDR"] == "127.0.0.1"
    assert int(str(failed["ATTEMPTS"])) >= 1
    assert failed["PRIORITY"] == "4"  # warning
    assert sent["EVENT_TYPE_ID"] == "2"
    # The request from a worker, the deliveries from the commitment process.
    assert received["_PID"] != sent["_PID"] == failed["_PID"]


def test_a_corrected_destination_applies_to_reports_already_waiting(setup: Setup) -> None:
    uid = "1.2.826.0.1.3680043.10.8.1"
    transaction = "1.2.826.0.1.3680043.10.9.8"
    wrong = setup.report_port
    with dcmrecvd(setup.tmp, setup.config("retry-delay = 1s\n")) as daemon:
        store(setup.port, [uid])
        ask(setup.port, transaction, [(CT, uid)])
        waiting.until(lambda: setup.attempts(transaction) >= 1, "a failed delivery", DEADLINE)
        setup.report_port = free_port()
        daemon.conf.write_text(setup.config("retry-delay = 1s\n"))
        there = modality.Reports()
        with modality.report_scp(setup.report_port, there):
            daemon.proc.send_signal(signal.SIGHUP)
            report = report_of(there, transaction)
        assert report.stored() == [(CT, uid)]
    assert f"127.0.0.1:{wrong}" in daemon.log()
