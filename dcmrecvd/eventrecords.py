"""What an event records: its manifest (JSON) and the deliveries it gets. Pure.

A manifest is fixed when its event is recorded, so that every delivery of the event,
the first and any after a restart, gives the same bytes. Workers (instance-stored) and
the events process (series and study complete) both build them here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from dcmrecvd.settings import EventKind, EventSettings

MANIFEST_VERSION = 1
MANIFEST_TARGET = "manifest"
HOOK_TARGET_PREFIX = "hook:"


class StoredObject(Protocol):
    """One listed object (the index's Entry has these)."""

    @property
    def path(self) -> str: ...
    @property
    def sop_class_uid(self) -> str: ...
    @property
    def sop_instance_uid(self) -> str: ...
    @property
    def study_instance_uid(self) -> str: ...
    @property
    def series_instance_uid(self) -> str: ...
    @property
    def patient_id(self) -> str: ...
    @property
    def modality(self) -> str: ...
    @property
    def calling_ae(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def received_at(self) -> float: ...


def timestamp(epoch: float) -> str:
    """ISO 8601 in UTC, to the millisecond."""
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _distinct(values: Iterable[str]) -> list[str]:
    return sorted({value for value in values if value})


@dataclass(frozen=True)
class Occurrence:
    """What happened: the event's kind, id, and for completions why and which time."""

    kind: EventKind
    id: str
    created_at: float
    study_instance_uid: str
    series_instance_uid: str  # "" for a study
    generation: int  # 0 for instance-stored
    reason: str  # quiet, max-age, rule; "" for instance-stored


def manifest(occurrence: Occurrence, files: Sequence[StoredObject]) -> dict[str, object]:
    """The manifest of `occurrence` over `files` (in the order given)."""
    times = [stored.received_at for stored in files]
    document: dict[str, object] = {
        "version": MANIFEST_VERSION,
        "id": occurrence.id,
        "event": occurrence.kind.value,
        "generation": occurrence.generation,
        "reason": occurrence.reason,
        "created_at": timestamp(occurrence.created_at),
        "study_instance_uid": occurrence.study_instance_uid,
    }
    if occurrence.kind is not EventKind.STUDY_COMPLETE:
        document["series_instance_uid"] = occurrence.series_instance_uid
    document |= {
        "patient_id": next((f.patient_id for f in files if f.patient_id), ""),
        "modalities": _distinct(f.modality for f in files),
        "calling_aetitles": _distinct(f.calling_ae for f in files),
        "first_received": timestamp(min(times)) if times else "",
        "last_received": timestamp(max(times)) if times else "",
        "instances": len(files),
    }
    if occurrence.kind is EventKind.STUDY_COMPLETE:
        document["series"] = len({f.series_instance_uid for f in files})
    document["bytes"] = sum(f.size for f in files)
    document["files"] = [
        {
            "path": f.path,
            "sop_class_uid": f.sop_class_uid,
            "sop_instance_uid": f.sop_instance_uid,
            "series_instance_uid": f.series_instance_uid,
            "modality": f.modality,
            "bytes": f.size,
            "received_at": timestamp(f.received_at),
            "calling_aetitle": f.calling_ae,
        }
        for f in files
    ]
    return document


def encode(document: dict[str, object]) -> str:
    # ensure_ascii: a manifest is ASCII whatever the character sets of its values.
    return json.dumps(document, indent=1, ensure_ascii=True)


def targets(settings: EventSettings, kind: EventKind, modalities: Iterable[str]) -> tuple[str, ...]:
    """The deliveries an event of `kind` over objects of `modalities` gets."""
    found = [MANIFEST_TARGET] if kind in settings.manifests else []
    present = set(modalities)
    for hook in settings.hooks:
        if hook.event is kind and (not hook.modalities or present & set(hook.modalities)):
            found.append(HOOK_TARGET_PREFIX + hook.name)
    return tuple(found)


def placeholder_values(document: dict[str, object], manifest_path: str) -> dict[str, str]:
    """What a hook's {placeholders} stand for, from its event's manifest."""
    files = document.get("files")
    first = files[0] if isinstance(files, list) and files else {}
    assert isinstance(first, dict)

    def text(value: object) -> str:
        if isinstance(value, list):
            return "\\".join(str(item) for item in value)
        return str(value)

    instance = document["event"] == EventKind.INSTANCE_STORED.value
    return {
        "manifest": manifest_path,
        "event": text(document["event"]),
        "event_id": text(document["id"]),
        "generation": text(document["generation"]),
        "reason": text(document["reason"]),
        "instances": text(document["instances"]),
        "path": text(first.get("path", "")) if instance else "",
        "StudyInstanceUID": text(document["study_instance_uid"]),
        "SeriesInstanceUID": text(document.get("series_instance_uid", "")),
        "SOPInstanceUID": text(first.get("sop_instance_uid", "")) if instance else "",
        "SOPClassUID": text(first.get("sop_class_uid", "")) if instance else "",
        "PatientID": text(document["patient_id"]),
        "Modality": text(document["modalities"]),
        "CallingAETitle": text(document["calling_aetitles"]),
    }
