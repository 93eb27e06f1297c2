"""What the daemon's processes have counted, read at one moment: the data the metrics
endpoint and `dcmrecvd status` show. Plain data, no I/O.

The workers count on the shared board (service/board.py); the parent counts its own
(worker starts and deaths, reloads) there too; the board reads it all into a Snapshot.
What only the moment knows (free space, the spool, the events queue) is measured by the
process that serves it, as Gauges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Why an association was refused: the A-ASSOCIATE-RJ reasons dcmrecvd gives.
REJECT_REASONS = (
    "application-context",  # not the DICOM application context
    "called-aetitle",  # check-called-aetitle, or no [peer] rule allows that called AE
    "calling-aetitle",  # no [peer] rule matches and default-policy = reject
    "local-limit",  # max-associations, a peer's max-associations
    "free-space",  # below free-space-reserve
    "no-contexts",  # no acceptable presentation context
)

# Why a listener that requires the PROXY protocol closed a connection: a peer that is not
# a trusted balancer, a header not complete in time, one the specification does not
# allow, a connection closed (or reset) before its header ended.
PROXY_ERRORS = ("untrusted", "timeout", "malformed", "closed")

# C-STORE response statuses by class (PS3.4 B.2.3, and dcmrecvd's own).
STATUS_CLASSES = (
    "success",  # 0000
    "warning",  # Bxxx, 0001, 0107, 0116
    "out-of-resources",  # A7xx
    "dataset-mismatch",  # A9xx
    "cannot-understand",  # Cxxx
    "duplicate",  # 0111
    "other-failure",  # anything else
)

# What Storage Commitment counts (dcmrecvd_commitment_* metrics).
COMMITMENT_COUNTERS = (
    "requests",  # N-ACTIONs answered with Success (the request recorded)
    "refused",  # N-ACTIONs answered with a failure
    "reports_same_association",  # reports the requester took on its own association
    "reports_new_association",  # reports the requester took on a new association
    "instances_stored",  # instances delivered reports said were stored
    "instances_failed",  # instances delivered reports said were not
    "delivery_failures",  # deliveries of a report that did not go through
    "retries",  # deliveries tried again after a failure
    "abandoned",  # reports given up
)

# The peer label of associations that no [peer] rule matched.
OTHER_PEER = "other"

# Upper bounds of the histograms' buckets, seconds (+Inf is implied).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def status_class(status: int) -> str:
    """The class of a C-STORE response status."""
    if status == 0x0000:
        return "success"
    if status == 0x0111:
        return "duplicate"
    if (status & 0xF000) == 0xB000 or status in (0x0001, 0x0107, 0x0116):
        return "warning"
    if (status & 0xFF00) == 0xA700:
        return "out-of-resources"
    if (status & 0xFF00) == 0xA900:
        return "dataset-mismatch"
    if (status & 0xF000) == 0xC000:
        return "cannot-understand"
    return "other-failure"


def bucket(seconds: float) -> int:
    """The index of the first bucket that holds `seconds` (len(BUCKETS) for +Inf)."""
    for index, bound in enumerate(BUCKETS):
        if seconds <= bound:
            return index
    return len(BUCKETS)


@dataclass(frozen=True)
class Histogram:
    """Observations per bucket (not cumulative; the last is +Inf) and their sum."""

    counts: tuple[int, ...] = (0,) * (len(BUCKETS) + 1)
    total: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class LiveAssociation:
    """An association in progress, as its worker last wrote it."""

    id: str  # ASSOC_ID in the journal
    worker: int  # pid
    calling_aetitle: str
    called_aetitle: str
    peer_address: str
    peer: str  # the [peer] rule's name, or OTHER_PEER
    tls: bool
    started: float  # epoch seconds
    instances: int  # stored so far
    bytes: int  # of the instances stored so far
    current_sop_instance_uid: str  # "" between objects
    current_bytes: int  # of the object in progress, so far


@dataclass(frozen=True)
class Worker:
    pid: int
    active: int  # associations connected
    accepting: bool
    beat_age: float  # seconds since it last showed that it accepts; inf before
    associations: int
    instances: int
    bytes: int


@dataclass(frozen=True)
class Snapshot:
    associations_accepted: int = 0
    associations_rejected: Mapping[str, int] = field(default_factory=dict)  # by reason
    associations_active: int = 0
    # (peer, status class) -> C-STORE responses sent
    responses: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # peer -> instances stored, and their bytes
    instances: Mapping[str, int] = field(default_factory=dict)
    bytes: Mapping[str, int] = field(default_factory=dict)
    # From the end of a dataset to its durable commit (or refusal), and the fsyncs in it.
    commit_seconds: Histogram = Histogram()
    fsync_seconds: Histogram = Histogram()
    tls_handshake_failures: int = 0
    proxy_header_errors: Mapping[str, int] = field(default_factory=dict)  # by PROXY_ERRORS
    proxy_health_checks: int = 0  # PROXY v2 LOCAL connections that asked for an association
    worker_starts: int = 0
    worker_deaths: int = 0  # ended without being asked to
    reloads: Mapping[str, int] = field(default_factory=dict)  # "success", "refused"
    last_reload_success: float = 0.0  # epoch seconds; 0 before the first
    config_sha256: str = ""  # of the configuration file in force
    # Storage Commitment: COMMITMENT_COUNTERS by name, and the requests whose report is
    # pending (None while no commitment process has counted them).
    commitment: Mapping[str, int] = field(default_factory=dict)
    commitment_pending: int | None = None
    workers: tuple[Worker, ...] = ()
    live: tuple[LiveAssociation, ...] = ()
