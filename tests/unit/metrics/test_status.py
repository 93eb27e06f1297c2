"""The status document and its text: what `dcmrecvd status` prints, with --json and
without."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator

import pytest

from dcmrecvd import __version__
from dcmrecvd.metrics import status
from dcmrecvd.metrics.exposition import Gauges
from dcmrecvd.metrics.snapshot import Snapshot
from tests.support import snapshots

GAUGES = Gauges(
    output_free_bytes=500_000_000_000,
    output_reserve_bytes=10_737_418_240,
    spool_temporary_files=2,
    event_deliveries={"pending": 4},
    workers=2,
)
UNKNOWN = Gauges(None, 0, None, None, 0)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local times as UTC, whatever the machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def through_json(snapshot: Snapshot, gauges: Gauges) -> status.Document:
    """The document as the command gets it: encoded by the daemon, decoded by the command."""
    made = status.document(snapshot, gauges, now=snapshots.NOW)
    decoded: status.Document = json.loads(json.dumps(made, allow_nan=False))
    return decoded


def test_document_of_a_busy_daemon() -> None:
    document = through_json(snapshots.busy(), GAUGES)
    assert (document["format"], document["version"]) == (status.FORMAT, __version__)
    assert document["time"] == snapshots.NOW
    assert document["config_sha256"] == snapshots.SHA256
    assert document["associations"] == {
        "accepted": 42,
        "rejected": {"called-aetitle": 2, "free-space": 1},
        "active": 2,
    }
    assert (document["instances"], document["bytes"]) == (130, 68_000_000)
    assert document["peers"]["ct-scanner"] == {
        "instances": 123,
        "bytes": 64_500_000,
        "responses": {"success": 120, "warning": 3},
    }
    assert document["output"] == {"free_bytes": 500_000_000_000, "reserve_bytes": 10_737_418_240}
    assert document["spool_temporary_files"] == 2
    # Every state, 0 when the index has none.
    assert document["event_deliveries"] == {"pending": 4, "failed": 0}
    assert document["reloads"] == {"success": 2, "refused": 1}
    assert document["last_reload_success"] == snapshots.NOW - 3600
    assert (document["worker_starts"], document["worker_deaths"]) == (3, 1)
    assert document["tls_handshake_failures"] == 4
    assert document["commitment"] == {
        "requests": 5,
        "refused": 1,
        "reports_same_association": 1,
        "reports_new_association": 3,
        "instances_stored": 40,
        "instances_failed": 2,
        "delivery_failures": 2,
        "retries": 2,
        "abandoned": 0,
        "pending": 1,
    }
    assert document["proxy"] == {
        "health_checks": 17,
        "header_errors": {"untrusted": 2, "malformed": 1},
    }


def test_document_lists_workers_and_live_associations() -> None:
    document = through_json(snapshots.busy(), GAUGES)
    assert document["workers"][0] == {
        "pid": 1201,
        "active": 2,
        "accepting": True,
        "beat_age": 0.4,
        "associations": 30,
        "instances": 100,
        "bytes": 50_000_000,
    }
    # A worker that has not beaten yet: JSON has no infinity.
    assert document["workers"][1]["beat_age"] is None
    live = snapshots.busy().live[0]
    assert document["live"][0] == dataclasses.asdict(live)


def test_document_of_a_fresh_daemon_knowing_nothing_of_the_moment() -> None:
    document = through_json(Snapshot(), UNKNOWN)
    assert document["associations"]["rejected"] == {}
    assert document["peers"] == {}
    assert document["output"] == {"free_bytes": None, "reserve_bytes": 0}
    assert document["spool_temporary_files"] is None
    assert document["event_deliveries"] is None
    assert document["last_reload_success"] is None
    assert (document["workers"], document["live"]) == ([], [])


def test_render_a_busy_daemon() -> None:
    text = status.render(through_json(snapshots.busy(), GAUGES))
    assert text == (
        "dcmrecvd 0.1.0 at 2026-12-01 10:00:00, configuration sha256 3f3f3f3f3f3f\n"
        "Associations  42 accepted, 3 rejected (2 called-aetitle, 1 free-space), 2 active\n"
        "Stored        130 instances, 68.0 MB (ct-scanner: 123, 64.5 MB; other: 7, 3.5 MB)\n"
        "Output        500.0 GB free, reserve 10.7 GB\n"
        "Spool         2 temporary files\n"
        "Events        4 pending, 0 failed deliveries\n"
        "Reloads       2 succeeded, 1 refused; last success 2026-12-01 09:00:00\n"
        "Workers       2 running, 3 started, 1 died unasked\n"
        "TLS           4 failed handshakes\n"
        "PROXY         17 health checks, 3 connections refused (2 untrusted, 1 malformed)\n"
        "Commitment    5 requests (1 refused), 4 reports (1 on their association, 3 on a new"
        " one), 1 pending, 2 failed deliveries, 0 given up\n"
        "\n"
        "Workers:\n"
        "   PID  ACTIVE  ACCEPTING   BEAT  ASSOCIATIONS  INSTANCES    BYTES\n"
        "  1201       2  yes        0.4 s            30        100  50.0 MB\n"
        "  1202       0  no             -            12         30  18.0 MB\n"
        "\n"
        "Associations in progress (2):\n"
        "  a1b2c3d4  CT01 -> DCMRECVD  from 10.20.0.5:40100 (peer ct-scanner), TLS,"
        " worker 1201\n"
        "            started 2026-12-01 09:57:55 (2 min 5 s ago), 15 instances, 7.5 MB\n"
        "            receiving 1.2.826.0.1.3680043.10.1017.99, 512.0 kB so far\n"
        "  e5f6a7b8  WS -> DCMRECVD  from 192.168.1.7:51000 (peer other), no TLS, worker 1201\n"
        "            started 2026-12-01 09:59:56 (4.0 s ago), 0 instances, 0 B\n"
        "            between objects\n"
    )


def test_render_a_fresh_daemon() -> None:
    text = status.render(through_json(Snapshot(), UNKNOWN))
    assert text == (
        "dcmrecvd 0.1.0 at 2026-12-01 10:00:00\n"
        "Associations  0 accepted, 0 rejected, 0 active\n"
        "Stored        0 instances, 0 B\n"
        "Output        free space unknown, reserve 0 B\n"
        "Spool         unknown\n"
        "Events        off\n"
        "Reloads       0 succeeded, 0 refused\n"
        "Workers       0 running, 0 started, 0 died unasked\n"
        "TLS           0 failed handshakes\n"
        "PROXY         0 health checks, 0 connections refused\n"
        "Commitment    off\n"
        "\n"
        "Workers: none\n"
        "\n"
        "Associations in progress: none\n"
    )


def test_render_escapes_what_a_peer_could_send_to_the_terminal() -> None:
    busy = snapshots.busy()
    hostile = dataclasses.replace(
        busy.live[0], calling_aetitle="\x1b[2JX", current_sop_instance_uid="1.2\n3"
    )
    text = status.render(through_json(dataclasses.replace(busy, live=(hostile,)), GAUGES))
    assert "\x1b" not in text
    assert "\\x1b[2JX -> DCMRECVD" in text
    assert "receiving 1.2\\n3," in text


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (512_000, "512.0 kB"),
        (1_500_000, "1.5 MB"),
        (10_737_418_240, "10.7 GB"),
        (2_500_000_000_000, "2.5 TB"),
        (7_000_000_000_000_000, "7000.0 TB"),
    ],
)
def test_sizes(count: int, shown: str) -> None:
    assert status.size(count) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.4, "0.4 s"),
        (9.96, "10.0 s"),
        (12.7, "12 s"),
        (59, "59 s"),
        (60, "1 min 0 s"),
        (125, "2 min 5 s"),
        (3 * 3600 + 125, "3 h 2 min"),
        (2 * 86400 + 3 * 3600 + 59, "2 d 3 h"),
        (-3, "0.0 s"),
    ],
)
def test_ages(seconds: float, shown: str) -> None:
    assert status.age(seconds) == shown
