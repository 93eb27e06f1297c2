"""Snapshots as the board gives them, and a stand-in board that gives one."""

from __future__ import annotations

from dcmrecvd.metrics.snapshot import (
    BUCKETS,
    Histogram,
    LiveAssociation,
    Snapshot,
    Worker,
)

# 2026-12-01 10:00:00 UTC
NOW = 1796119200.0
SHA256 = "3f" * 32


def histogram(*observations: tuple[int, int], total: float) -> Histogram:
    """A Histogram with count `n` in bucket `i` for each (i, n)."""
    counts = [0] * (len(BUCKETS) + 1)
    for index, count in observations:
        counts[index] = count
    return Histogram(tuple(counts), total)


def busy() -> Snapshot:
    """A daemon with two workers, two peers and two associations in progress."""
    return Snapshot(
        associations_accepted=42,
        associations_rejected={"called-aetitle": 2, "free-space": 1},
        associations_active=2,
        responses={
            ("ct-scanner", "success"): 120,
            ("ct-scanner", "warning"): 3,
            ("other", "success"): 7,
            ("other", "out-of-resources"): 1,
        },
        instances={"ct-scanner": 123, "other": 7},
        bytes={"ct-scanner": 64_500_000, "other": 3_500_000},
        commit_seconds=histogram((2, 100), (5, 27), (len(BUCKETS), 3), total=40.5),
        fsync_seconds=histogram((0, 250), (3, 10), total=0.4),
        tls_handshake_failures=4,
        proxy_header_errors={"untrusted": 2, "timeout": 0, "malformed": 1, "closed": 0},
        proxy_health_checks=17,
        commitment={
            "requests": 5,
            "refused": 1,
            "reports_same_association": 1,
            "reports_new_association": 3,
            "instances_stored": 40,
            "instances_failed": 2,
            "delivery_failures": 2,
            "retries": 2,
            "abandoned": 0,
        },
        commitment_pending=1,
        worker_starts=3,
        worker_deaths=1,
        reloads={"success": 2, "refused": 1},
        last_reload_success=NOW - 3600,
        config_sha256=SHA256,
        workers=(
            Worker(1201, 2, True, 0.4, 30, 100, 50_000_000),
            Worker(1202, 0, False, float("inf"), 12, 30, 18_000_000),
        ),
        live=(
            LiveAssociation(
                id="a1b2c3d4",
                worker=1201,
                calling_aetitle="CT01",
                called_aetitle="DCMRECVD",
                peer_address="10.20.0.5:40100",
                peer="ct-scanner",
                tls=True,
                started=NOW - 125,
                instances=15,
                bytes=7_500_000,
                current_sop_instance_uid="1.2.826.0.1.3680043.10.1017.99",
                current_bytes=512_000,
            ),
            LiveAssociation(
                id="e5f6a7b8",
                worker=1201,
                calling_aetitle="WS",
                called_aetitle="DCMRECVD",
                peer_address="192.168.1.7:51000",
                peer="other",
                tls=False,
                started=NOW - 4,
                instances=0,
                bytes=0,
                current_sop_instance_uid="",
                current_bytes=0,
            ),
        ),
    )


class StandInBoard:
    """What the observer reads of the board: metrics(), here a fixed Snapshot."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def metrics(self) -> Snapshot:
        return self.snapshot
