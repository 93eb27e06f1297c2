"""An event's manifest, its deliveries and the values its hooks' placeholders get."""

from __future__ import annotations

import json

import pytest

from dcmrecvd import eventrecords, hookcommand
from dcmrecvd.settings import EventKind, EventSettings, Hook
from dcmrecvd.store.index import Entry

HOSTILE = "a b; rm -rf / $(reboot) `id` \"q\" 'q' \\ \n\t\0 -x --all ../../etc é"


def entry(n: int, **changes: object) -> Entry:
    values: dict[str, object] = {
        "path": f"/data/{n}.dcm",
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "sop_instance_uid": f"1.2.3.{n}",
        "study_instance_uid": "1.2.3",
        "series_instance_uid": f"1.2.3.{n % 2}",
        "patient_id": "P1",
        "modality": "CT" if n % 2 else "SR",
        "calling_ae": f"AE{n % 3}",
        "called_ae": "DCMRECVD",
        "peer_address": "192.0.2.1",
        "transfer_syntax": "1.2.840.10008.1.2.1",
        "size": 100 + n,
        "received_at": 1_800_000_000.0 + n,
        "association_id": "1.1",
    }
    values.update(changes)
    return Entry(**values)  # type: ignore[arg-type]


def occurrence(kind: EventKind, **changes: object) -> eventrecords.Occurrence:
    values: dict[str, object] = {
        "kind": kind,
        "id": "id-1",
        "created_at": 1_800_000_100.25,
        "study_instance_uid": "1.2.3",
        "series_instance_uid": "" if kind is EventKind.STUDY_COMPLETE else "1.2.3.1",
        "generation": 2,
        "reason": "quiet",
    }
    values.update(changes)
    return eventrecords.Occurrence(**values)  # type: ignore[arg-type]


def test_a_study_manifest_counts_and_lists_every_file() -> None:
    files = [entry(n) for n in range(4)]
    document = eventrecords.manifest(occurrence(EventKind.STUDY_COMPLETE), files)
    assert document["version"] == 1 and document["event"] == "study-complete"
    assert document["generation"] == 2 and document["reason"] == "quiet"
    assert "series_instance_uid" not in document
    assert document["series"] == 2 and document["instances"] == 4
    assert document["bytes"] == 100 + 101 + 102 + 103
    assert document["modalities"] == ["CT", "SR"]
    assert document["calling_aetitles"] == ["AE0", "AE1", "AE2"]
    assert document["created_at"] == "2027-01-15T08:01:40.250Z"
    assert document["first_received"] == "2027-01-15T08:00:00.000Z"
    assert document["last_received"] == "2027-01-15T08:00:03.000Z"
    listed = document["files"]
    assert isinstance(listed, list)
    assert [f["path"] for f in listed] == [f"/data/{n}.dcm" for n in range(4)]
    assert listed[1] == {
        "path": "/data/1.dcm",
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "sop_instance_uid": "1.2.3.1",
        "series_instance_uid": "1.2.3.1",
        "modality": "CT",
        "bytes": 101,
        "received_at": "2027-01-15T08:00:01.000Z",
        "calling_aetitle": "AE1",
    }


def test_a_series_manifest_names_its_series_and_no_series_count() -> None:
    document = eventrecords.manifest(occurrence(EventKind.SERIES_COMPLETE), [entry(1)])
    assert document["series_instance_uid"] == "1.2.3.1"
    assert "series" not in document


def test_the_encoded_manifest_is_ascii_json_whatever_the_values() -> None:
    files = [entry(1, patient_id=HOSTILE, path="/data/é\udcff.dcm")]
    text = eventrecords.encode(eventrecords.manifest(occurrence(EventKind.STUDY_COMPLETE), files))
    assert text.isascii()
    assert json.loads(text)["patient_id"] == HOSTILE


@pytest.mark.parametrize(
    ("kind", "modalities", "expected"),
    [
        (EventKind.STUDY_COMPLETE, ["CT"], ("manifest", "hook:ct", "hook:all-studies")),
        (EventKind.STUDY_COMPLETE, ["MR"], ("manifest", "hook:all-studies")),
        (EventKind.SERIES_COMPLETE, ["CT"], ()),
        (EventKind.INSTANCE_STORED, ["CT"], ("hook:each",)),
    ],
)
def test_targets_follow_the_manifests_and_the_hooks_filters(
    kind: EventKind, modalities: list[str], expected: tuple[str, ...]
) -> None:
    settings = EventSettings(
        manifests=frozenset({EventKind.STUDY_COMPLETE}),
        hooks=(
            Hook("ct", EventKind.STUDY_COMPLETE, ("/bin/true",), modalities=("CT", "PT")),
            Hook("all-studies", EventKind.STUDY_COMPLETE, ("/bin/true",)),
            Hook("each", EventKind.INSTANCE_STORED, ("/bin/true",)),
        ),
    )
    assert eventrecords.targets(settings, kind, modalities) == expected


def test_every_placeholder_has_a_value() -> None:
    document = eventrecords.manifest(occurrence(EventKind.INSTANCE_STORED), [entry(1)])
    values = eventrecords.placeholder_values(document, "/events/hooks/1.x.json")
    assert set(values) == hookcommand.NAMES
    assert values["path"] == "/data/1.dcm" and values["SOPInstanceUID"] == "1.2.3.1"
    assert values["manifest"] == "/events/hooks/1.x.json" and values["event_id"] == "id-1"


def test_completion_events_leave_the_instance_placeholders_empty() -> None:
    document = eventrecords.manifest(occurrence(EventKind.STUDY_COMPLETE), [entry(0), entry(1)])
    values = eventrecords.placeholder_values(document, "m")
    assert values["path"] == values["SOPInstanceUID"] == values["SOPClassUID"] == ""
    assert values["Modality"] == "CT\\SR" and values["instances"] == "2"


def test_hostile_values_in_every_placeholder_stay_one_argument_each() -> None:
    hostile = entry(
        1,
        path="/data/" + HOSTILE,
        sop_class_uid=HOSTILE,
        sop_instance_uid=HOSTILE,
        study_instance_uid=HOSTILE,
        series_instance_uid=HOSTILE,
        patient_id=HOSTILE,
        modality=HOSTILE,
        calling_ae=HOSTILE,
    )
    document = eventrecords.manifest(
        occurrence(
            EventKind.INSTANCE_STORED,
            id=HOSTILE,
            study_instance_uid=HOSTILE,
            series_instance_uid=HOSTILE,
        ),
        [hostile],
    )
    # Through JSON, as a delivery reads the manifest back from the index.
    values = eventrecords.placeholder_values(json.loads(eventrecords.encode(document)), HOSTILE)
    names = sorted(hookcommand.NAMES)
    command = hookcommand.parse(
        "/usr/bin/hook " + " ".join(f"--{name}={{{name}}} {{{name}}}" for name in names)
    )
    argv = hookcommand.expand(command, values)
    assert len(argv) == len(command) == 1 + 2 * len(names)
    for number, name in enumerate(names):
        value = values[name].replace("\0", "")
        assert argv[1 + 2 * number] == f"--{name}={value}"
        assert argv[2 + 2 * number] == value
    assert all("\0" not in argument for argument in argv)
