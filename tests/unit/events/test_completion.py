"""Series and study completion over a real index file, driven by a test clock."""

from __future__ import annotations

import dataclasses
import itertools
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from dcmrecvd.config.access import AccessPolicy, PeerRule
from dcmrecvd.events import completion
from dcmrecvd.settings import CompletionRule, EventKind, EventSettings, Hook
from dcmrecvd.store.index import Entry, Index
from tests.support import dicomgen

T0 = 1_800_000_000.0
BOTH = frozenset({EventKind.SERIES_COMPLETE, EventKind.STUDY_COMPLETE})
NO_PEERS = AccessPolicy()
SETTINGS = EventSettings(series_quiet=10, study_quiet=30, max_age=1000, manifests=BOTH)
_numbers = itertools.count(1)


def entry(study: str, series: str, at: float, **changes: Any) -> Entry:
    number = next(_numbers)
    made = Entry(
        path=f"/data/{study or '-'}/{series or '-'}/{number}.dcm",
        sop_class_uid=dicomgen.CT,
        sop_instance_uid=f"{series}.{number}",
        study_instance_uid=study,
        series_instance_uid=series,
        patient_id="P1",
        modality="CT",
        calling_ae="CT1",
        called_ae="DCMRECVD",
        peer_address="192.0.2.7",
        transfer_syntax=ExplicitVRLittleEndian,
        size=1000,
        received_at=T0 + at,
        association_id="a1",
    )
    return dataclasses.replace(made, **changes)


@pytest.fixture
def listing(tmp_path: Path) -> Iterator[Index]:
    with Index(tmp_path / "index.db") as opened:
        yield opened


def events(listing: Index) -> list[dict[str, Any]]:
    """Every recorded event's manifest, in sequence order."""
    rows = listing.transaction(
        lambda c: c.execute("SELECT manifest FROM events ORDER BY seq").fetchall(), write=False
    )
    return [json.loads(row[0]) for row in rows]


def run(
    listing: Index,
    start: float,
    end: float,
    settings: EventSettings = SETTINGS,
    access: AccessPolicy = NO_PEERS,
) -> list[completion.Completed]:
    """Passes once a second from `start` to `end` (seconds after T0)."""
    done = []
    now = start
    while now <= end:
        done += completion.run_pass(listing, settings, access, T0 + now)
        now += 1
    return done


def completed(found: list[completion.Completed]) -> list[tuple[str, str, int, str]]:
    return [
        (d.kind.value, d.series_instance_uid or d.study_instance_uid, d.generation, d.reason)
        for d in found
    ]


def test_interleaved_studies_from_several_peers_complete_once_each_after_their_quiet(
    listing: Index,
) -> None:
    arrivals = [
        ("A", "A1", 0, "CT1"),
        ("B", "B1", 0.5, "CT2"),
        ("A", "A2", 1, "CT2"),
        ("A", "A1", 2, "CT1"),
        ("B", "B1", 3, "CT1"),
        ("A", "A2", 4, "CT2"),
        ("B", "B1", 20, "CT2"),
    ]
    for study, series, at, calling in arrivals:
        listing.record(entry(study, series, at, calling_ae=calling), track=True)
    done = run(listing, 0, 120)
    assert completed(done) == [
        ("series-complete", "A1", 1, "quiet"),  # last at 2: quiet from 12
        ("series-complete", "A2", 1, "quiet"),  # last at 4: from 14
        ("series-complete", "B1", 1, "quiet"),  # last at 20: from 30
        ("study-complete", "A", 1, "quiet"),  # last at 4: from 34
        ("study-complete", "B", 1, "quiet"),  # last at 20: from 50
    ]
    manifests = events(listing)
    assert [m["event"] for m in manifests] == [d[0] for d in completed(done)]
    study_a = manifests[3]
    assert study_a["study_instance_uid"] == "A"
    assert study_a["instances"] == 4 and study_a["series"] == 2 and study_a["bytes"] == 4000
    assert study_a["calling_aetitles"] == ["CT1", "CT2"]
    assert [f["series_instance_uid"] for f in study_a["files"]] == ["A1", "A2", "A1", "A2"]
    assert study_a["created_at"].endswith("Z") and study_a["generation"] == 1
    assert len({m["id"] for m in manifests}) == 5


def test_a_study_completes_only_after_its_quiet_period(listing: Index) -> None:
    listing.record(entry("A", "A1", 0), track=True)
    assert completed(run(listing, 0, 9.5)) == []
    assert completed(run(listing, 10, 29)) == [("series-complete", "A1", 1, "quiet")]
    assert completed(run(listing, 30, 30)) == [("study-complete", "A", 1, "quiet")]


def test_a_late_instance_reopens_its_series_and_study_with_the_next_generation(
    listing: Index,
) -> None:
    listing.record(entry("A", "A1", 0), track=True)
    listing.record(entry("A", "A2", 1), track=True)
    assert len(run(listing, 0, 60)) == 3
    listing.record(entry("A", "A2", 100), track=True)
    again = run(listing, 100, 200)
    assert completed(again) == [
        ("series-complete", "A2", 2, "quiet"),
        ("study-complete", "A", 2, "quiet"),
    ]
    last = events(listing)[-1]
    assert last["generation"] == 2 and last["instances"] == 3
    assert last["first_received"] < last["last_received"]


def test_a_study_that_keeps_receiving_completes_at_its_maximum_age_with_its_series(
    listing: Index,
) -> None:
    settings = dataclasses.replace(SETTINGS, max_age=60)
    listing.record(entry("A", "A1", 0), track=True)
    found = []
    for at in range(5, 100, 5):  # every 5 s: A2 is never quiet for 10
        listing.record(entry("A", "A2", at), track=True)
        found += completion.run_pass(listing, settings, NO_PEERS, T0 + at)
    # The study is 60 s old at 60; A2 only 55 s: it completes with its study, before it.
    assert completed(found) == [
        ("series-complete", "A1", 1, "quiet"),
        ("series-complete", "A2", 1, "max-age"),
        ("study-complete", "A", 1, "max-age"),
    ]
    # The instances after 60 re-opened both; quiet after the last one, at 95.
    assert completed(run(listing, 96, 200, settings)) == [
        ("series-complete", "A2", 2, "quiet"),
        ("study-complete", "A", 2, "quiet"),
    ]


@pytest.mark.parametrize(
    "rule",
    [CompletionRule(expected_series=2), CompletionRule(required_modalities=("CT", "SR"))],
    ids=["expected-series", "required-modalities"],
)
def test_a_rule_completes_a_study_as_soon_as_its_series_are_complete(
    listing: Index, rule: CompletionRule
) -> None:
    settings = dataclasses.replace(SETTINGS, rule=rule)
    listing.record(entry("A", "A1", 0), track=True)
    assert completed(run(listing, 0, 20, settings)) == [("series-complete", "A1", 1, "quiet")]
    listing.record(entry("A", "A2", 21, modality="SR"), track=True)
    assert completed(run(listing, 21, 31, settings)) == [
        ("series-complete", "A2", 1, "quiet"),
        ("study-complete", "A", 1, "rule"),
    ]


def test_a_peer_rule_applies_to_the_studies_its_peer_began(listing: Index) -> None:
    settings = dataclasses.replace(
        SETTINGS, peer_rules=(("scanner", CompletionRule(expected_series=1)),)
    )
    access = AccessPolicy((PeerRule("scanner", calling_aetitle="CT1"),))
    listing.record(entry("A", "A1", 0, calling_ae="CT1"), track=True)
    listing.record(entry("B", "B1", 0, calling_ae="OTHER"), track=True)
    assert completed(run(listing, 0, 10, settings, access)) == [
        ("series-complete", "A1", 1, "quiet"),
        ("series-complete", "B1", 1, "quiet"),
        ("study-complete", "A", 1, "rule"),
    ]
    assert completed(run(listing, 11, 30, settings, access)) == [
        ("study-complete", "B", 1, "quiet")
    ]


def test_rule_precedence_peer_then_its_profile_then_the_receiver() -> None:
    own, profiles, default = (
        CompletionRule(expected_series=1),
        CompletionRule(expected_series=2),
        CompletionRule(expected_series=3),
    )
    settings = dataclasses.replace(
        SETTINGS,
        rule=default,
        peer_rules=(("a", own),),
        profile_rules=(("ct", profiles),),
    )
    access = AccessPolicy(
        (
            PeerRule("a", calling_aetitle="A", profile="ct"),
            PeerRule("b", calling_aetitle="B", profile="ct"),
            PeerRule("c", calling_aetitle="C"),
        )
    )
    assert completion.rule_for(settings, access, "A", "192.0.2.1") == own
    assert completion.rule_for(settings, access, "B", "192.0.2.1") == profiles
    assert completion.rule_for(settings, access, "C", "192.0.2.1") == default
    assert completion.rule_for(settings, access, "NOBODY", "192.0.2.1") == default


def test_completion_state_survives_closing_and_opening_the_index(tmp_path: Path) -> None:
    with Index(tmp_path / "index.db") as first:
        first.record(entry("A", "A1", 0), track=True)
        assert run(first, 0, 5) == []
    # A restart: another connection, and time went on while nothing ran.
    with Index(tmp_path / "index.db") as second:
        assert completed(run(second, 100, 100)) == [
            ("series-complete", "A1", 1, "quiet"),
            ("study-complete", "A", 1, "quiet"),
        ]
        assert run(second, 101, 200) == []


def test_without_a_delivery_nothing_is_recorded_but_the_state(listing: Index) -> None:
    settings = dataclasses.replace(SETTINGS, manifests=frozenset())
    listing.record(entry("A", "A1", 0), track=True)
    done = run(listing, 0, 40, settings)
    assert [d.seq for d in done] == [None, None]
    assert events(listing) == []


def test_hook_filters_pick_the_deliveries(listing: Index) -> None:
    hooks = (
        Hook("ct", EventKind.STUDY_COMPLETE, ("/bin/true",), modalities=("CT",)),
        Hook("mr", EventKind.STUDY_COMPLETE, ("/bin/true",), modalities=("MR",)),
        Hook("any-series", EventKind.SERIES_COMPLETE, ("/bin/true",)),
    )
    settings = dataclasses.replace(SETTINGS, manifests=frozenset(), hooks=hooks)
    listing.record(entry("A", "A1", 0), track=True)
    run(listing, 0, 40, settings)
    rows = listing.transaction(
        lambda c: c.execute(
            "SELECT e.kind, d.target, d.state FROM deliveries d JOIN events e USING (seq)"
            " ORDER BY d.seq"
        ).fetchall(),
        write=False,
    )
    assert rows == [
        ("series-complete", "hook:any-series", "pending"),
        ("study-complete", "hook:ct", "pending"),
    ]


def test_objects_without_study_or_series_uids_are_listed_and_never_tracked(
    listing: Index,
) -> None:
    listing.record(entry("", "", 0), track=True)
    assert run(listing, 0, 100) == []


def test_old_finished_events_are_pruned_pending_ones_kept(listing: Index) -> None:
    listing.record(entry("A", "A1", 0), track=True)
    run(listing, 0, 40)
    listing.transaction(
        lambda c: c.execute("UPDATE deliveries SET state = 'done' WHERE seq = 1"), write=True
    )
    # The series' event was made at 10, its study's (still pending) at 30.
    assert completion.prune(listing, T0 + 10 + completion.EVENT_RETENTION - 1) == 0
    assert completion.prune(listing, T0 + 31 + completion.EVENT_RETENTION) == 1
    assert [m["event"] for m in events(listing)] == ["study-complete"]


def test_a_version_1_index_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    raw = sqlite3.connect(path)
    raw.executescript(
        "CREATE TABLE objects (path TEXT PRIMARY KEY NOT NULL, sop_class_uid TEXT NOT NULL,"
        " sop_instance_uid TEXT NOT NULL, study_instance_uid TEXT NOT NULL,"
        " series_instance_uid TEXT NOT NULL, patient_id TEXT NOT NULL, modality TEXT NOT NULL,"
        " calling_ae TEXT NOT NULL, called_ae TEXT NOT NULL, peer_address TEXT NOT NULL,"
        " transfer_syntax TEXT NOT NULL, size INTEGER NOT NULL, received_at REAL NOT NULL,"
        " association_id TEXT NOT NULL);"
        "INSERT INTO objects VALUES ('/x', '1', '2', 'A', 'A1', 'P', 'CT', 'C', 'D', 'E',"
        " 'F', 1, 2.0, 'G');"
        "PRAGMA user_version = 1;"
    )
    raw.close()
    with Index(path) as migrated:
        assert not migrated.created
        assert migrated.paths() == {"/x"}
        migrated.record(entry("B", "B1", 0), track=True)
        assert len(run(migrated, 0, 40)) == 2
