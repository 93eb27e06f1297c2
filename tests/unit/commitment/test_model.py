"""Storage Commitment as data: parsing the request, the verdict on each instance, the
report's Event Information, where it goes and when it is tried again."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dcmrecvd.commitment import model
from dcmrecvd.commitment.model import Copy, Failure, Reference
from dcmrecvd.settings import CommitmentSettings, ReportDestination

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def information(transaction: str | None, *refs: tuple[str | None, str | None]) -> Dataset:
    ds = Dataset()
    if transaction is not None:
        ds.TransactionUID = transaction
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        if sop_class is not None:
            item.ReferencedSOPClassUID = sop_class
        if sop_instance is not None:
            item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    if refs:
        ds.ReferencedSOPSequence = Sequence(items)
    return ds


def test_a_request_names_its_transaction_and_each_instance_once_in_order() -> None:
    found = model.parse(
        model.SOP_INSTANCE,
        1,
        information("1.2.3", (CT, "1.2.3.2"), (CT, "1.2.3.1"), (CT, "1.2.3.2")),
    )
    assert found == model.Request("1.2.3", (Reference(CT, "1.2.3.2"), Reference(CT, "1.2.3.1")))


@pytest.mark.parametrize(
    ("instance", "action", "info", "status"),
    [
        ("1.2.3.4", 1, information("1.2", (CT, "1.3")), model.NO_SUCH_SOP_INSTANCE),
        (model.SOP_INSTANCE, 2, information("1.2", (CT, "1.3")), model.NO_SUCH_ACTION),
        (model.SOP_INSTANCE, None, information("1.2", (CT, "1.3")), model.NO_SUCH_ACTION),
        (model.SOP_INSTANCE, 1, None, model.INVALID_ARGUMENT_VALUE),
        (model.SOP_INSTANCE, 1, information(None, (CT, "1.3")), model.INVALID_ARGUMENT_VALUE),
        (model.SOP_INSTANCE, 1, information("1.02", (CT, "1.3")), model.INVALID_ARGUMENT_VALUE),
        (model.SOP_INSTANCE, 1, information("1.2"), model.INVALID_ARGUMENT_VALUE),
        (model.SOP_INSTANCE, 1, information("1.2", (CT, None)), model.INVALID_ARGUMENT_VALUE),
        (model.SOP_INSTANCE, 1, information("1.2", (None, "1.3")), model.INVALID_ARGUMENT_VALUE),
        (model.SOP_INSTANCE, 1, information("1.2", ("x.y", "1.3")), model.INVALID_ARGUMENT_VALUE),
    ],
)
def test_a_malformed_request_is_refused_with_its_status(
    instance: str, action: int | None, info: Dataset | None, status: int
) -> None:
    with pytest.raises(model.Refused) as refused:
        model.parse(instance, action, info)
    assert refused.value.status == status
    assert refused.value.reason


REF = Reference(CT, "1.2.3.1")


@pytest.mark.parametrize(
    ("copies", "expected"),
    [
        ([], Failure.NO_SUCH_OBJECT_INSTANCE),  # never stored
        ([Copy(CT, present=False)], Failure.NO_SUCH_OBJECT_INSTANCE),  # deleted from disk
        ([Copy(MR, present=True)], Failure.CLASS_INSTANCE_CONFLICT),
        ([Copy(MR, present=True), Copy(CT, present=False)], Failure.CLASS_INSTANCE_CONFLICT),
        ([Copy(CT, present=True)], None),
        ([Copy(CT, present=True, verified=True)], None),
        ([Copy(CT, present=True, verified=False)], Failure.PROCESSING_FAILURE),
        ([Copy(CT, present=True, verified=False), Copy(CT, True, True)], None),
        ([Copy(CT, present=False), Copy(CT, present=True)], None),
    ],
)
def test_the_verdict_on_one_instance(copies: list[Copy], expected: Failure | None) -> None:
    assert model.verdict(REF, copies) is expected


def test_a_report_keeps_the_request_order_and_its_event_type_says_if_any_failed() -> None:
    a, b, c = (Reference(CT, f"1.2.{n}") for n in (1, 2, 3))
    request = model.Request("9.8", (a, b, c))
    made = model.report(request, {a: None, b: Failure.NO_SUCH_OBJECT_INSTANCE, c: None})
    assert made.stored == (a, c)
    assert made.failed == ((b, Failure.NO_SUCH_OBJECT_INSTANCE),)
    assert made.event_type == model.SOME_FAILED
    assert model.report(request, dict.fromkeys((a, b, c))).event_type == model.ALL_STORED


def test_the_event_information_of_a_report() -> None:
    a, b = Reference(CT, "1.2.1"), Reference(MR, "1.2.2")
    ds = model.event_information(
        model.Report("9.8", (a,), ((b, Failure.CLASS_INSTANCE_CONFLICT),)), "DCMRECVD"
    )
    assert ds.TransactionUID == "9.8"
    assert ds.RetrieveAETitle == "DCMRECVD"
    assert [
        (i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in ds.ReferencedSOPSequence
    ] == [(CT, "1.2.1")]
    [failed] = ds.FailedSOPSequence
    assert (failed.ReferencedSOPClassUID, failed.ReferencedSOPInstanceUID) == (MR, "1.2.2")
    assert failed.FailureReason == 0x0119


def test_an_all_failed_report_has_no_referenced_sequence_and_no_retrieve_ae() -> None:
    ds = model.event_information(
        model.Report("9.8", (), ((REF, Failure.NO_SUCH_OBJECT_INSTANCE),)), "DCMRECVD"
    )
    assert "ReferencedSOPSequence" not in ds
    assert "RetrieveAETitle" not in ds
    assert ds.FailedSOPSequence[0].FailureReason == 0x0112


def test_references_and_destinations_survive_their_encoding() -> None:
    refs = (Reference(CT, "1.2.1"), Reference(MR, "1.2.2"))
    assert model.decode_references(model.encode_references(refs)) == refs
    destination = ReportDestination("pacs.example", 104, "PACS", tls=True)
    assert model.decode_destination(model.encode_destination(destination)) == destination
    assert model.decode_destination(model.encode_destination(None)) is None


def test_the_address_is_the_rule_destination_now_else_the_recorded_one() -> None:
    now = ReportDestination("10.0.0.2", 105)
    then = ReportDestination("10.0.0.1", 104, "OLD")
    settings = CommitmentSettings(destinations=(("ct", now),))
    assert model.address(settings, "ct", then, "CT1") == model.Address(
        "CT1", "10.0.0.2", 105, False
    )
    assert model.address(settings, "gone", then, "CT1") == model.Address(
        "OLD", "10.0.0.1", 104, False
    )
    assert model.address(settings, "", None, "CT1") is None
    assert model.address(settings, "gone", None, "CT1") is None


def test_retries_wait_twice_as_long_each_time_up_to_an_hour_then_give_up() -> None:
    assert [model.backoff(30, n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert model.backoff(30, 500) == model.MAX_BACKOFF
    settings = CommitmentSettings(retry_delay=10, give_up_after=100)
    assert model.next_try(settings, received_at=0, attempts=2, now=50) == 70
    assert model.next_try(settings, received_at=0, attempts=2, now=100) is None
