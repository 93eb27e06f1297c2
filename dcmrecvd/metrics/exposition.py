"""A Snapshot and the Gauges of one moment as Prometheus metric families. No I/O.

`SnapshotCollector` is a prometheus_client collector: a registry of its own, served by
prometheus_client's exposition code, renders the families in Prometheus' text format or
OpenMetrics, as the scraper asks. Only API present in prometheus_client 0.16 (Debian 12)
is used.

Label sets that are known in advance (the reject reasons, the response status classes of
a peer seen, the reload results) are all present from the start, at 0, so that rate()
and increase() see the first one counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dcmrecvd.metrics.snapshot import (
    BUCKETS,
    PROXY_ERRORS,
    REJECT_REASONS,
    STATUS_CLASSES,
    Histogram,
    Snapshot,
)

# The results of a reload that dcmrecvd_reloads_total counts.
RELOAD_RESULTS = ("success", "refused")
# The delivery states that dcmrecvd_event_deliveries shows.
DELIVERY_STATES = ("pending", "failed")


@dataclass(frozen=True)
class Gauges:
    """What only the moment knows, measured by the process that serves the metrics."""

    # The output directory's file system; None when it cannot be queried.
    output_free_bytes: int | None
    # The free-space reserve in bytes (the larger of its size and its percentage).
    output_reserve_bytes: int
    # Temporary files in the output directory's spool; None when it cannot be read.
    spool_temporary_files: int | None
    # Event deliveries by state (DELIVERY_STATES); None when events are off.
    event_deliveries: Mapping[str, int] | None
    # Worker processes on the board.
    workers: int


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    # prometheus_client appends _total to a counter family's samples.
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _by_label(
    family: CounterMetricFamily | GaugeMetricFamily,
    values: Mapping[str, int],
    known: tuple[str, ...] = (),
) -> CounterMetricFamily | GaugeMetricFamily:
    """`family` with a sample for each of `known` (0 when absent), then the others."""
    for label in known:
        family.add_metric([label], values.get(label, 0))
    for label in sorted(set(values) - set(known)):
        family.add_metric([label], values[label])
    return family


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    """`histogram`'s counts per bucket as Prometheus' cumulative buckets."""
    buckets = []
    cumulative = 0
    for bound, count in zip((*BUCKETS, float("inf")), histogram.counts, strict=True):
        cumulative += count
        # As Prometheus writes bounds: 0.001, 1.0, +Inf.
        buckets.append(("+Inf" if math.isinf(bound) else repr(bound), float(cumulative)))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=histogram.total)


def families(snapshot: Snapshot, gauges: Gauges) -> Iterator[Metric]:
    """Every metric family of one moment."""
    yield _counter(
        "dcmrecvd_associations_accepted",
        "Associations accepted (A-ASSOCIATE-AC sent).",
        snapshot.associations_accepted,
    )
    yield _by_label(
        CounterMetricFamily(
            "dcmrecvd_associations_rejected",
            "Associations rejected (A-ASSOCIATE-RJ sent), by reason.",
            labels=["reason"],
        ),
        snapshot.associations_rejected,
        REJECT_REASONS,
    )
    yield _gauge(
        "dcmrecvd_associations_active",
        "Associations connected now, over all worker processes.",
        snapshot.associations_active,
    )
    responses = CounterMetricFamily(
        "dcmrecvd_cstore_responses",
        "C-STORE responses sent, by peer rule and status class.",
        labels=["peer", "status"],
    )
    # Each peer seen with every status class: the board counts by snapshot.status_class.
    for peer in sorted({peer for peer, _ in snapshot.responses}):
        for status in STATUS_CLASSES:
            responses.add_metric([peer, status], snapshot.responses.get((peer, status), 0))
    yield responses
    yield _by_label(
        CounterMetricFamily(
            "dcmrecvd_received_instances",
            "Instances stored durably, by peer rule.",
            labels=["peer"],
        ),
        snapshot.instances,
    )
    yield _by_label(
        CounterMetricFamily(
            "dcmrecvd_received_bytes",
            "Bytes of the instances stored durably, by peer rule.",
            labels=["peer"],
        ),
        snapshot.bytes,
    )
    yield _histogram(
        "dcmrecvd_store_commit_seconds",
        "Time from the end of a dataset to its durable commit or refusal.",
        snapshot.commit_seconds,
    )
    yield _histogram(
        "dcmrecvd_fsync_seconds",
        "Time of each fsync of a file or directory while committing.",
        snapshot.fsync_seconds,
    )
    yield _counter(
        "dcmrecvd_tls_handshake_failures",
        "TLS handshakes that failed.",
        snapshot.tls_handshake_failures,
    )
    yield _by_label(
        CounterMetricFamily(
            "dcmrecvd_proxy_header_errors",
            "Connections closed for their PROXY protocol header, by reason.",
            labels=["reason"],
        ),
        snapshot.proxy_header_errors,
        PROXY_ERRORS,
    )
    yield _counter(
        "dcmrecvd_proxy_health_checks",
        "A balancer's health checks (PROXY v2 LOCAL) that asked for an association.",
        snapshot.proxy_health_checks,
    )
    yield _counter(
        "dcmrecvd_worker_starts",
        "Worker processes started.",
        snapshot.worker_starts,
    )
    yield _counter(
        "dcmrecvd_worker_deaths",
        "Worker processes that ended without being asked to.",
        snapshot.worker_deaths,
    )
    yield _gauge("dcmrecvd_workers", "Worker processes running now.", gauges.workers)
    yield _by_label(
        CounterMetricFamily(
            "dcmrecvd_reloads",
            "Configuration reloads, by result (success or refused).",
            labels=["result"],
        ),
        snapshot.reloads,
        RELOAD_RESULTS,
    )
    yield _gauge(
        "dcmrecvd_last_reload_success_timestamp_seconds",
        "When the configuration was last reloaded successfully, in seconds since the epoch"
        " (0 before the first reload).",
        snapshot.last_reload_success,
    )
    yield InfoMetricFamily(
        "dcmrecvd_config",
        "The configuration in force: the SHA-256 of its file.",
        value={"sha256": snapshot.config_sha256},
    )
    if gauges.output_free_bytes is not None:
        yield _gauge(
            "dcmrecvd_output_free_bytes",
            "Bytes available to the receiver on the output directory's file system.",
            gauges.output_free_bytes,
        )
    yield _gauge(
        "dcmrecvd_output_reserve_bytes",
        "The free-space reserve in bytes: below it, associations and stores are refused.",
        gauges.output_reserve_bytes,
    )
    if gauges.spool_temporary_files is not None:
        yield _gauge(
            "dcmrecvd_spool_temporary_files",
            "Temporary files of objects being received in the output directory's spool.",
            gauges.spool_temporary_files,
        )
    yield from _commitment(snapshot)
    if gauges.event_deliveries is not None:
        yield _by_label(
            GaugeMetricFamily(
                "dcmrecvd_event_deliveries",
                "Event deliveries (manifests and hooks) by state: pending or failed.",
                labels=["state"],
            ),
            gauges.event_deliveries,
            DELIVERY_STATES,
        )


def _commitment(snapshot: Snapshot) -> Iterator[Metric]:
    """Storage Commitment's families: requests, reports, instances, failures, retries."""
    counts = snapshot.commitment

    def labelled(name: str, documentation: str, label: str, values: dict[str, str]) -> Metric:
        family = CounterMetricFamily(name, documentation, labels=[label])
        for value, counter in values.items():
            family.add_metric([value], counts.get(counter, 0))
        return family

    yield labelled(
        "dcmrecvd_commitment_requests",
        "Storage Commitment requests (N-ACTION), by result: accepted (Success) or refused.",
        "result",
        {"accepted": "requests", "refused": "refused"},
    )
    yield labelled(
        "dcmrecvd_commitment_reports",
        "Storage Commitment reports (N-EVENT-REPORT) the requester took, by route.",
        "route",
        {
            "same-association": "reports_same_association",
            "new-association": "reports_new_association",
        },
    )
    yield labelled(
        "dcmrecvd_commitment_instances",
        "Instances in delivered Storage Commitment reports, by result: stored or failed.",
        "result",
        {"stored": "instances_stored", "failed": "instances_failed"},
    )
    yield _counter(
        "dcmrecvd_commitment_delivery_failures",
        "Deliveries of a Storage Commitment report that did not go through.",
        counts.get("delivery_failures", 0),
    )
    yield _counter(
        "dcmrecvd_commitment_retries",
        "Deliveries of a Storage Commitment report tried again after a failure.",
        counts.get("retries", 0),
    )
    yield _counter(
        "dcmrecvd_commitment_abandoned",
        "Storage Commitment reports given up (give-up-after passed, or nowhere to send).",
        counts.get("abandoned", 0),
    )
    if snapshot.commitment_pending is not None:
        yield _gauge(
            "dcmrecvd_commitment_pending",
            "Storage Commitment requests whose report has not been delivered yet.",
            snapshot.commitment_pending,
        )


class SnapshotCollector(Collector):
    """The metrics of the moment `read` returns, read again at each collection."""

    def __init__(self, read: Callable[[], tuple[Snapshot, Gauges]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        snapshot, gauges = self.read()
        return families(snapshot, gauges)
