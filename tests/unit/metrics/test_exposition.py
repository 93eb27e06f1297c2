"""A Snapshot and its Gauges as Prometheus metrics: names, types, labels, values, the
cumulative buckets, both formats, and promtool's lint."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

from dcmrecvd.metrics.exposition import Gauges, SnapshotCollector
from dcmrecvd.metrics.snapshot import BUCKETS, REJECT_REASONS, STATUS_CLASSES, Snapshot
from tests.support import snapshots
from tests.support.promtool import check_metrics

GAUGES = Gauges(
    output_free_bytes=500_000_000_000,
    output_reserve_bytes=10_737_418_240,
    spool_temporary_files=2,
    event_deliveries={"pending": 4, "failed": 1},
    workers=2,
)
UNKNOWN = Gauges(None, 0, None, None, 0)
# (family as the parser names it, type)
FAMILIES = [
    ("dcmrecvd_associations_accepted", "counter"),
    ("dcmrecvd_associations_rejected", "counter"),
    ("dcmrecvd_associations_active", "gauge"),
    ("dcmrecvd_cstore_responses", "counter"),
    ("dcmrecvd_received_instances", "counter"),
    ("dcmrecvd_received_bytes", "counter"),
    ("dcmrecvd_store_commit_seconds", "histogram"),
    ("dcmrecvd_fsync_seconds", "histogram"),
    ("dcmrecvd_tls_handshake_failures", "counter"),
    ("dcmrecvd_proxy_header_errors", "counter"),
    ("dcmrecvd_proxy_health_checks", "counter"),
    ("dcmrecvd_worker_starts", "counter"),
    ("dcmrecvd_worker_deaths", "counter"),
    ("dcmrecvd_workers", "gauge"),
    ("dcmrecvd_reloads", "counter"),
    ("dcmrecvd_last_reload_success_timestamp_seconds", "gauge"),
    ("dcmrecvd_config_info", "gauge"),
    ("dcmrecvd_output_free_bytes", "gauge"),
    ("dcmrecvd_output_reserve_bytes", "gauge"),
    ("dcmrecvd_spool_temporary_files", "gauge"),
    ("dcmrecvd_commitment_requests", "counter"),
    ("dcmrecvd_commitment_reports", "counter"),
    ("dcmrecvd_commitment_instances", "counter"),
    ("dcmrecvd_commitment_delivery_failures", "counter"),
    ("dcmrecvd_commitment_retries", "counter"),
    ("dcmrecvd_commitment_abandoned", "counter"),
    ("dcmrecvd_commitment_pending", "gauge"),
    ("dcmrecvd_event_deliveries", "gauge"),
]


def registry(snapshot: Snapshot, gauges: Gauges) -> CollectorRegistry:
    found = CollectorRegistry(auto_describe=True)
    found.register(SnapshotCollector(lambda: (snapshot, gauges)))
    return found


def text(snapshot: Snapshot, gauges: Gauges = GAUGES) -> str:
    return generate_latest(registry(snapshot, gauges)).decode()


def parsed(snapshot: Snapshot, gauges: Gauges = GAUGES) -> dict[str, Metric]:
    return {
        family.name: family for family in text_string_to_metric_families(text(snapshot, gauges))
    }


def samples(family: Metric) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


def test_every_family_with_its_type_in_order() -> None:
    found = parsed(snapshots.busy())
    assert [(name, family.type) for name, family in found.items()] == FAMILIES
    # Help texts are sentences, as Prometheus' own.
    assert all(family.documentation.endswith(".") for family in found.values())


def test_counters_carry_the_total_suffix_in_the_text() -> None:
    lines = text(snapshots.busy()).splitlines()
    assert "dcmrecvd_associations_accepted_total 42.0" in lines
    assert "# TYPE dcmrecvd_associations_accepted_total counter" in lines
    assert not any(line.startswith("dcmrecvd_associations_accepted ") for line in lines)


def test_every_reject_reason_is_there_at_zero_when_none() -> None:
    rejected = samples(parsed(snapshots.busy())["dcmrecvd_associations_rejected"])
    expected = {"called-aetitle": 2.0, "free-space": 1.0}
    assert rejected == {
        ("dcmrecvd_associations_rejected_total", (("reason", reason),)): expected.get(reason, 0.0)
        for reason in REJECT_REASONS
    }


def test_responses_by_peer_with_every_status_class() -> None:
    responses = samples(parsed(snapshots.busy())["dcmrecvd_cstore_responses"])
    assert len(responses) == 2 * len(STATUS_CLASSES)
    key = "dcmrecvd_cstore_responses_total"
    assert responses[(key, (("peer", "ct-scanner"), ("status", "success")))] == 120
    assert responses[(key, (("peer", "ct-scanner"), ("status", "warning")))] == 3
    assert responses[(key, (("peer", "ct-scanner"), ("status", "duplicate")))] == 0
    assert responses[(key, (("peer", "other"), ("status", "out-of-resources")))] == 1


def test_instances_and_bytes_by_peer() -> None:
    found = parsed(snapshots.busy())
    assert samples(found["dcmrecvd_received_instances"]) == {
        ("dcmrecvd_received_instances_total", (("peer", "ct-scanner"),)): 123,
        ("dcmrecvd_received_instances_total", (("peer", "other"),)): 7,
    }
    assert samples(found["dcmrecvd_received_bytes"]) == {
        ("dcmrecvd_received_bytes_total", (("peer", "ct-scanner"),)): 64_500_000,
        ("dcmrecvd_received_bytes_total", (("peer", "other"),)): 3_500_000,
    }


def test_histogram_buckets_are_cumulative_and_end_with_inf() -> None:
    commit = parsed(snapshots.busy())["dcmrecvd_store_commit_seconds"]
    buckets = [(s.labels["le"], s.value) for s in commit.samples if s.name.endswith("_bucket")]
    # 100 in the third bucket, 27 in the sixth, 3 above the last bound.
    assert [le for le, _ in buckets] == [*(str(bound) for bound in BUCKETS), "+Inf"]
    assert [value for _, value in buckets] == [0, 0, 100, 100, 100, 127, *[127] * 8, 130]
    totals = {s.name: s.value for s in commit.samples if not s.name.endswith("_bucket")}
    assert totals == {
        "dcmrecvd_store_commit_seconds_count": 130,
        "dcmrecvd_store_commit_seconds_sum": 40.5,
    }


def test_an_empty_snapshot_has_zeroes_and_no_peers() -> None:
    found = parsed(Snapshot(), UNKNOWN)
    assert samples(found["dcmrecvd_cstore_responses"]) == {}
    assert samples(found["dcmrecvd_proxy_header_errors"]) == {
        ("dcmrecvd_proxy_header_errors_total", (("reason", reason),)): 0
        for reason in ("untrusted", "timeout", "malformed", "closed")
    }
    assert samples(found["dcmrecvd_reloads"]) == {
        ("dcmrecvd_reloads_total", (("result", "success"),)): 0,
        ("dcmrecvd_reloads_total", (("result", "refused"),)): 0,
    }
    fsync = found["dcmrecvd_fsync_seconds"]
    assert {s.value for s in fsync.samples} == {0}
    assert len(fsync.samples) == len(BUCKETS) + 3


def test_what_the_moment_does_not_know_is_left_out() -> None:
    found = parsed(snapshots.busy(), UNKNOWN)
    for name in (
        "dcmrecvd_output_free_bytes",
        "dcmrecvd_spool_temporary_files",
        "dcmrecvd_event_deliveries",
    ):
        assert name not in found
    assert samples(found["dcmrecvd_output_reserve_bytes"]) == {
        ("dcmrecvd_output_reserve_bytes", ()): 0
    }


def test_gauges_of_the_moment() -> None:
    found = parsed(snapshots.busy())
    assert samples(found["dcmrecvd_output_free_bytes"]) == {
        ("dcmrecvd_output_free_bytes", ()): 500_000_000_000
    }
    assert samples(found["dcmrecvd_spool_temporary_files"]) == {
        ("dcmrecvd_spool_temporary_files", ()): 2
    }
    assert samples(found["dcmrecvd_workers"]) == {("dcmrecvd_workers", ()): 2}
    assert samples(found["dcmrecvd_event_deliveries"]) == {
        ("dcmrecvd_event_deliveries", (("state", "pending"),)): 4,
        ("dcmrecvd_event_deliveries", (("state", "failed"),)): 1,
    }
    # Both states even when the index has no such delivery.
    quiet = Gauges(1, 0, 0, {}, 1)
    assert len(parsed(snapshots.busy(), quiet)["dcmrecvd_event_deliveries"].samples) == 2


def test_config_reloads_and_the_other_counters() -> None:
    found = parsed(snapshots.busy())
    assert samples(found["dcmrecvd_config_info"]) == {
        ("dcmrecvd_config_info", (("sha256", snapshots.SHA256),)): 1
    }
    assert samples(found["dcmrecvd_proxy_header_errors"]) == {
        ("dcmrecvd_proxy_header_errors_total", (("reason", "untrusted"),)): 2,
        ("dcmrecvd_proxy_header_errors_total", (("reason", "timeout"),)): 0,
        ("dcmrecvd_proxy_header_errors_total", (("reason", "malformed"),)): 1,
        ("dcmrecvd_proxy_header_errors_total", (("reason", "closed"),)): 0,
    }
    assert samples(found["dcmrecvd_reloads"]) == {
        ("dcmrecvd_reloads_total", (("result", "success"),)): 2,
        ("dcmrecvd_reloads_total", (("result", "refused"),)): 1,
    }
    assert samples(found["dcmrecvd_last_reload_success_timestamp_seconds"]) == {
        ("dcmrecvd_last_reload_success_timestamp_seconds", ()): snapshots.NOW - 3600
    }
    values = {
        name: found[name].samples[0].value
        for name in (
            "dcmrecvd_associations_accepted",
            "dcmrecvd_associations_active",
            "dcmrecvd_tls_handshake_failures",
            "dcmrecvd_proxy_health_checks",
            "dcmrecvd_worker_starts",
            "dcmrecvd_worker_deaths",
        )
    }
    assert values == {
        "dcmrecvd_associations_accepted": 42,
        "dcmrecvd_associations_active": 2,
        "dcmrecvd_tls_handshake_failures": 4,
        "dcmrecvd_proxy_health_checks": 17,
        "dcmrecvd_worker_starts": 3,
        "dcmrecvd_worker_deaths": 1,
    }


def test_openmetrics_has_the_same_families_and_an_info_type() -> None:
    # prometheus_client's openmetrics modules have no type hints.
    written = openmetrics.generate_latest(  # type: ignore[no-untyped-call]
        registry(snapshots.busy(), GAUGES)
    ).decode()
    assert written.endswith("# EOF\n")
    families = openmetrics_parser.text_string_to_metric_families(  # type: ignore[no-untyped-call]
        written
    )
    found = {family.name: family.type for family in families}
    assert found["dcmrecvd_config"] == "info"
    assert found["dcmrecvd_cstore_responses"] == "counter"
    assert found["dcmrecvd_store_commit_seconds"] == "histogram"
    assert len(found) == len(FAMILIES)


def test_each_collection_reads_the_moment_again() -> None:
    reads: list[int] = []

    def read() -> tuple[Snapshot, Gauges]:
        reads.append(1)
        return Snapshot(associations_accepted=len(reads)), UNKNOWN

    found = CollectorRegistry(auto_describe=True)
    found.register(SnapshotCollector(read))
    before = len(reads)
    first = generate_latest(found).decode()
    second = generate_latest(found).decode()
    assert len(reads) == before + 2
    assert f"dcmrecvd_associations_accepted_total {before + 1}.0" in first
    assert f"dcmrecvd_associations_accepted_total {before + 2}.0" in second


def test_promtool_finds_nothing_to_lint() -> None:
    assert check_metrics(text(snapshots.busy())) == ""
    assert check_metrics(text(Snapshot(), UNKNOWN)) == ""


def test_promtool_would_report_a_problem() -> None:
    # The check above would pass vacuously if promtool printed nothing for a bad text.
    bad = "# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n"
    assert "requests" in check_metrics(bad)


def test_commitment_counts_by_label_and_its_pending_gauge_once_counted() -> None:
    counted = Snapshot(
        commitment={
            "requests": 5,
            "refused": 1,
            "reports_same_association": 2,
            "reports_new_association": 3,
            "instances_stored": 40,
            "instances_failed": 2,
            "delivery_failures": 4,
            "retries": 3,
            "abandoned": 1,
        },
        commitment_pending=2,
    )
    found = parsed(counted)
    assert samples(found["dcmrecvd_commitment_requests"]) == {
        ("dcmrecvd_commitment_requests_total", (("result", "accepted"),)): 5.0,
        ("dcmrecvd_commitment_requests_total", (("result", "refused"),)): 1.0,
    }
    assert samples(found["dcmrecvd_commitment_reports"]) == {
        ("dcmrecvd_commitment_reports_total", (("route", "same-association"),)): 2.0,
        ("dcmrecvd_commitment_reports_total", (("route", "new-association"),)): 3.0,
    }
    assert samples(found["dcmrecvd_commitment_instances"]) == {
        ("dcmrecvd_commitment_instances_total", (("result", "stored"),)): 40.0,
        ("dcmrecvd_commitment_instances_total", (("result", "failed"),)): 2.0,
    }
    assert found["dcmrecvd_commitment_delivery_failures"].samples[0].value == 4
    assert found["dcmrecvd_commitment_retries"].samples[0].value == 3
    assert found["dcmrecvd_commitment_abandoned"].samples[0].value == 1
    assert found["dcmrecvd_commitment_pending"].samples[0].value == 2
    assert "dcmrecvd_commitment_pending" not in parsed(Snapshot())
