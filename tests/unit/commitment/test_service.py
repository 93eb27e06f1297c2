"""The worker's answer to an N-ACTION and the commitment process's deliveries, over a
real index with a test clock, a test report channel and a test sender."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from dcmrecvd.commitment import model, pending, scp, sender
from dcmrecvd.commitment.delivery import Deliverer
from dcmrecvd.profiles import AcceptedContext, Profile, Role
from dcmrecvd.settings import CommitmentSettings, ReportDestination, Settings
from dcmrecvd.stats import Stats
from dcmrecvd.store import index
from dcmrecvd.store.index import Index
from tests.support import dicomgen
from tests.support.commitment import request_information

T0 = 1_800_000_000.0
CT = dicomgen.CT
DESTINATION = ReportDestination("192.0.2.7", 104)
SETTINGS = Settings(
    aetitle="DCMRECVD",
    index_path="unused",
    commitment=CommitmentSettings(
        retry_delay=10, give_up_after=100, destinations=(("ct", DESTINATION),)
    ),
)
HERE = scp.Requester("CT1", "DCMRECVD", "192.0.2.7", "ct", report_here=True)
ELSEWHERE = dataclasses.replace(HERE, report_here=False)
NOWHERE = scp.Requester("X", "DCMRECVD", "192.0.2.9", "", report_here=False)


class Counted(Stats):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def commitment(self, counter: str, count: int = 1) -> None:
        self.counts[counter] += count


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def listing(tmp_path: Path) -> Iterator[Index]:
    with Index(tmp_path / "index.db") as opened:
        yield opened


@pytest.fixture
def stored(listing: Index, tmp_path: Path) -> str:
    """One CT instance on disk and in the index; its UID."""
    path = dicomgen.write(dicomgen.Spec(CT, "1.2.3.1"), tmp_path / "ct.dcm")
    entry = index.describe(path, T0)
    assert entry is not None
    listing.record(entry)
    return "1.2.3.1"


def ask(
    service: scp.CommitmentScp, requester: scp.Requester, info: Dataset | None
) -> tuple[int, scp.FollowUp | None]:
    return service.on_action(requester, (model.SOP_CLASS, model.SOP_INSTANCE), 1, info)


def test_the_profile_serves_the_sop_class_with_both_roles_once() -> None:
    plain = Profile("p", (AcceptedContext(CT, ("1.2.840.10008.1.2.1",)),))
    served = scp.serving(plain)
    assert served.contexts[-1] == AcceptedContext(model.SOP_CLASS, scp.TRANSFER_SYNTAXES)
    assert served.roles == ((model.SOP_CLASS, Role.BOTH),)
    assert scp.serving(served) == served


def test_a_request_is_recorded_then_reported_on_its_association(
    listing: Index, stored: str
) -> None:
    counted, clock = Counted(), Clock()
    service = scp.CommitmentScp(SETTINGS, listing, counted, clock)
    status, follow_up = ask(
        service, HERE, request_information("9.1", [(CT, stored), (CT, "1.2.3.9")])
    )
    assert status == model.SUCCESS and follow_up is not None
    # Recorded before the answer, due only after the hand-off time.
    assert pending.count_pending(listing) == 1
    assert pending.due(listing, T0 + scp.HANDOFF - 1, 10) == []
    sent: list[tuple[Dataset, int]] = []

    def send(information: Dataset, kind: int) -> int | None:
        sent.append((information, kind))
        return 0x0000

    follow_up(send)
    [(information, kind)] = sent
    assert kind == model.SOME_FAILED
    assert information.TransactionUID == "9.1"
    assert [i.ReferencedSOPInstanceUID for i in information.ReferencedSOPSequence] == [stored]
    assert [
        (i.ReferencedSOPInstanceUID, i.FailureReason) for i in information.FailedSOPSequence
    ] == [("1.2.3.9", 0x0112)]
    assert pending.count_pending(listing) == 0
    assert counted.counts == Counter(
        requests=1, reports_same_association=1, instances_stored=1, instances_failed=1
    )


def test_a_report_not_taken_on_its_association_goes_to_the_commitment_process(
    listing: Index, stored: str
) -> None:
    counted, clock = Counted(), Clock()
    service = scp.CommitmentScp(SETTINGS, listing, counted, clock)
    _, follow_up = ask(service, HERE, request_information("9.1", [(CT, stored)]))
    assert follow_up is not None
    clock.now = T0 + 2
    follow_up(lambda information, kind: None)
    [due] = pending.due(listing, T0 + 2, 10)
    assert due.attempts == 0
    assert counted.counts["delivery_failures"] == 1


def test_a_report_not_taken_and_with_nowhere_else_to_go_is_given_up(
    listing: Index, stored: str
) -> None:
    counted = Counted()
    service = scp.CommitmentScp(SETTINGS, listing, counted, Clock())
    requester = dataclasses.replace(NOWHERE, report_here=True)
    _, follow_up = ask(service, requester, request_information("9.1", [(CT, stored)]))
    assert follow_up is not None
    follow_up(lambda information, kind: 0x0110)
    assert pending.count_pending(listing) == 0
    assert counted.counts["abandoned"] == 1


def test_a_request_for_a_new_association_is_due_at_once(listing: Index, stored: str) -> None:
    service = scp.CommitmentScp(SETTINGS, listing, Counted(), Clock())
    status, follow_up = ask(service, ELSEWHERE, request_information("9.1", [(CT, stored)]))
    assert (status, follow_up) == (model.SUCCESS, None)
    [due] = pending.due(listing, T0, 10)
    assert (due.peer, due.destination, due.calling_ae) == ("ct", DESTINATION, "CT1")


def test_refusals_record_nothing(listing: Index) -> None:
    counted = Counted()
    service = scp.CommitmentScp(SETTINGS, listing, counted, Clock())
    info = request_information("9.1", [(CT, "1.2.3.1")])
    assert ask(service, NOWHERE, info) == (model.NOT_AUTHORIZED, None)
    assert ask(service, HERE, None) == (model.INVALID_ARGUMENT_VALUE, None)
    assert service.on_action(HERE, (CT, model.SOP_INSTANCE), 1, info) == (0x0118, None)
    assert service.on_action(HERE, (model.SOP_CLASS, "1.2.3"), 1, info) == (
        model.NO_SUCH_SOP_INSTANCE,
        None,
    )
    assert pending.count_pending(listing) == 0
    assert counted.counts == Counter(refused=4)


def test_a_request_that_cannot_be_recorded_is_a_processing_failure(
    listing: Index, stored: str
) -> None:
    service = scp.CommitmentScp(SETTINGS, listing, Counted(), Clock())
    listing.close()
    info = request_information("9.1", [(CT, stored)])
    assert ask(service, ELSEWHERE, info) == (model.PROCESSING_FAILURE, None)


class Sender:
    """Stands for sender.deliver: answers from `outcomes`, records what it was given."""

    def __init__(self, *outcomes: bool) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, made: model.Report, to: model.Address, **options: Any) -> sender.Outcome:
        self.calls.append({"report": made, "to": to, **options})
        delivered = self.outcomes.pop(0)
        return sender.Outcome(delivered, "delivered" if delivered else "connection refused")


def recorded(listing: Index, requester: scp.Requester, uids: list[str]) -> pending.Pending:
    service = scp.CommitmentScp(SETTINGS, listing, Counted(), Clock())
    ask(service, requester, request_information("9.1", [(CT, uid) for uid in uids]))
    [due] = pending.due(listing, T0 + scp.HANDOFF, 10)
    return due


def test_a_delivery_that_fails_is_retried_later_and_later_then_delivered(
    listing: Index, stored: str
) -> None:
    kept = recorded(listing, ELSEWHERE, [stored])
    counted, clock, send = Counted(), Clock(), Sender(False, False, True)
    deliverer = Deliverer(SETTINGS, listing, counted, send, clock)
    assert deliverer.due() == [kept]
    assert not deliverer.deliver(kept)
    assert deliverer.due() == []
    clock.now = T0 + 10
    [again] = deliverer.due()
    assert not deliverer.deliver(again)
    clock.now = T0 + 29
    assert deliverer.due() == []  # 10 s, then 20 s
    clock.now = T0 + 30
    [last] = deliverer.due()
    assert deliverer.deliver(last)
    assert pending.state_of(listing, kept.id) == (pending.DONE, 2, "delivered")
    assert [call["to"] for call in send.calls] == [
        model.Address("CT1", "192.0.2.7", 104, False)
    ] * 3
    assert send.calls[0]["aetitle"] == "DCMRECVD"
    assert send.calls[0]["context"] is None
    assert counted.counts == Counter(
        delivery_failures=2, retries=2, reports_new_association=1, instances_stored=1
    )


def test_each_attempt_checks_the_instances_again(
    listing: Index, stored: str, tmp_path: Path
) -> None:
    kept = recorded(listing, ELSEWHERE, [stored])
    clock, send = Clock(), Sender(False, True)
    deliverer = Deliverer(SETTINGS, listing, Counted(), send, clock)
    deliverer.deliver(kept)
    (tmp_path / "ct.dcm").unlink()
    clock.now = T0 + 10
    deliverer.deliver(deliverer.due()[0])
    first, second = (call["report"] for call in send.calls)
    assert first.event_type == model.ALL_STORED
    assert second.failed == ((model.Reference(CT, stored), model.Failure.NO_SUCH_OBJECT_INSTANCE),)


def test_a_report_is_given_up_once_older_than_give_up_after(listing: Index, stored: str) -> None:
    kept = recorded(listing, ELSEWHERE, [stored])
    counted, clock = Counted(), Clock()
    clock.now = T0 + 100
    deliverer = Deliverer(SETTINGS, listing, counted, Sender(False), clock)
    assert not deliverer.deliver(kept)
    assert pending.state_of(listing, kept.id) == (
        pending.FAILED,
        0,
        "connection refused; tried 1 time(s)",
    )
    assert counted.counts["abandoned"] == 1


def test_a_rule_without_destination_any_more_uses_the_recorded_one(
    listing: Index, stored: str
) -> None:
    kept = recorded(listing, ELSEWHERE, [stored])
    moved = dataclasses.replace(
        SETTINGS,
        commitment=CommitmentSettings(
            destinations=(("ct", ReportDestination("192.0.2.8", 11112)),)
        ),
    )
    send = Sender(True, True)
    Deliverer(moved, listing, Counted(), send, Clock()).deliver(kept)
    assert send.calls[0]["to"] == model.Address("CT1", "192.0.2.8", 11112, False)
    gone = dataclasses.replace(SETTINGS, commitment=CommitmentSettings())
    Deliverer(gone, listing, Counted(), send, Clock()).deliver(kept)
    assert send.calls[1]["to"] == model.Address("CT1", "192.0.2.7", 104, False)


def test_nowhere_to_send_is_given_up_at_once(listing: Index, stored: str) -> None:
    kept = recorded(listing, dataclasses.replace(NOWHERE, report_here=True), [stored])
    counted, send = Counted(), Sender()
    assert not Deliverer(SETTINGS, listing, counted, send, Clock()).deliver(kept)
    assert send.calls == []
    assert pending.state_of(listing, kept.id)[0] == pending.FAILED  # type: ignore[index]
    assert counted.counts["abandoned"] == 1


def test_tls_without_a_tls_section_fails_the_attempt_without_sending(
    listing: Index, stored: str
) -> None:
    kept = recorded(listing, ELSEWHERE, [stored])
    over_tls = dataclasses.replace(
        SETTINGS,
        commitment=CommitmentSettings(
            retry_delay=10, destinations=(("ct", dataclasses.replace(DESTINATION, tls=True)),)
        ),
    )
    send = Sender()
    assert not Deliverer(over_tls, listing, Counted(), send, Clock()).deliver(kept)
    assert send.calls == []
    state, attempts, detail = pending.state_of(listing, kept.id)  # type: ignore[misc]
    assert (state, attempts) == (pending.PENDING, 1)
    assert "TLS" in detail
