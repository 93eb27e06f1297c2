"""What `dcmrecvd status` shows: the status document (JSON, what the status socket sends
and `--json` prints) and its text for a human. No I/O.

The document is made from a Snapshot, the Gauges and the time it was made; render()
works from the document alone (as decoded from JSON), so the command needs nothing else.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from dcmrecvd import __version__
from dcmrecvd.metrics.exposition import DELIVERY_STATES, RELOAD_RESULTS, Gauges
from dcmrecvd.metrics.snapshot import (
    COMMITMENT_COUNTERS,
    PROXY_ERRORS,
    REJECT_REASONS,
    STATUS_CLASSES,
    Snapshot,
)

# The document's "format": another value is a daemon this command cannot read.
FORMAT = 1

Document = dict[str, Any]


def document(snapshot: Snapshot, gauges: Gauges, *, now: float) -> Document:
    """The status document of one moment; `now` is when it is made (epoch seconds)."""
    peers = sorted({*snapshot.instances, *snapshot.bytes, *(p for p, _ in snapshot.responses)})
    return {
        "format": FORMAT,
        "version": __version__,
        "time": now,
        "config_sha256": snapshot.config_sha256,
        "associations": {
            "accepted": snapshot.associations_accepted,
            "rejected": _ordered(snapshot.associations_rejected, REJECT_REASONS),
            "active": snapshot.associations_active,
        },
        "instances": sum(snapshot.instances.values()),
        "bytes": sum(snapshot.bytes.values()),
        "peers": {
            peer: {
                "instances": snapshot.instances.get(peer, 0),
                "bytes": snapshot.bytes.get(peer, 0),
                "responses": {
                    status: count
                    for status in STATUS_CLASSES
                    if (count := snapshot.responses.get((peer, status), 0))
                },
            }
            for peer in peers
        },
        "output": {
            "free_bytes": gauges.output_free_bytes,
            "reserve_bytes": gauges.output_reserve_bytes,
        },
        "spool_temporary_files": gauges.spool_temporary_files,
        "event_deliveries": (
            None
            if gauges.event_deliveries is None
            else _ordered(gauges.event_deliveries, DELIVERY_STATES, keep_zero=True)
        ),
        "tls_handshake_failures": snapshot.tls_handshake_failures,
        # None while no commitment process has counted (Storage Commitment off).
        "commitment": (
            None
            if snapshot.commitment_pending is None
            else {
                **{name: snapshot.commitment.get(name, 0) for name in COMMITMENT_COUNTERS},
                "pending": snapshot.commitment_pending,
            }
        ),
        "proxy": {
            "health_checks": snapshot.proxy_health_checks,
            "header_errors": _ordered(snapshot.proxy_header_errors, PROXY_ERRORS),
        },
        "worker_starts": snapshot.worker_starts,
        "worker_deaths": snapshot.worker_deaths,
        "reloads": _ordered(snapshot.reloads, RELOAD_RESULTS, keep_zero=True),
        "last_reload_success": snapshot.last_reload_success or None,
        "workers": [
            {
                **asdict(worker),
                # JSON has no infinity: a worker that has not beaten yet has no age.
                "beat_age": worker.beat_age if math.isfinite(worker.beat_age) else None,
            }
            for worker in snapshot.workers
        ],
        "live": [asdict(association) for association in snapshot.live],
    }


def _ordered(
    values: Mapping[str, int], known: Sequence[str], *, keep_zero: bool = False
) -> dict[str, int]:
    """`values` with `known` keys first, in their order; zeroes only with `keep_zero`."""
    ordered = {key: values.get(key, 0) for key in known}
    ordered.update({key: values[key] for key in sorted(set(values) - set(known))})
    return {key: count for key, count in ordered.items() if count or keep_zero}


# --- the text ----------------------------------------------------------------------------


def _commitment(counts: Mapping[str, int] | None) -> str:
    if counts is None:
        return "off"
    return (
        f"{counts['requests']} requests ({counts['refused']} refused),"
        f" {counts['reports_same_association'] + counts['reports_new_association']} reports"
        f" ({counts['reports_same_association']} on their association,"
        f" {counts['reports_new_association']} on a new one), {counts['pending']} pending,"
        f" {counts['delivery_failures']} failed deliveries, {counts['abandoned']} given up"
    )


def _proxy(proxy: Mapping[str, Any]) -> str:
    errors: Mapping[str, int] = proxy["header_errors"]
    detail = ", ".join(f"{count} {reason}" for reason, count in errors.items())
    return f"{proxy['health_checks']} health checks, {sum(errors.values())} connections refused" + (
        f" ({detail})" if detail else ""
    )


def size(count: int) -> str:
    """Bytes in decimal units: 0 B, 512.0 kB, 1.2 GB."""
    if abs(count) < 1000:
        return f"{count} B"
    value = float(count)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if abs(value) < 1000:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} TB"


def age(seconds: float) -> str:
    """A duration as its two largest units: 4 s, 2 min 5 s, 3 h 2 min, 2 d 3 h."""
    # A clock stepped back makes a start in the future: no age yet.
    seconds = max(0.0, seconds)
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{whole} s"
    parts: list[str] = []
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if whole >= length or parts:
            parts.append(f"{whole // length} {unit}")
            whole %= length
    return " ".join(parts[:2])


def local_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _shown(text: str) -> str:
    """`text` with what a terminal would act on (escape sequences, line breaks) escaped:
    AE titles and UIDs come from the peer."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _counted(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """Columns aligned as `align` says, one character each: < left, > right."""
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]
    return [
        "  ".join(
            cell.ljust(width) if side == "<" else cell.rjust(width)
            for cell, width, side in zip(row, widths, align, strict=True)
        ).rstrip()
        for row in (headers, *rows)
    ]


def _header(status: Document) -> list[str]:
    associations = status["associations"]
    rejected = associations["rejected"]
    reasons = ", ".join(f"{count} {reason}" for reason, count in rejected.items())
    peers = "; ".join(
        f"{_shown(peer)}: {values['instances']}, {size(values['bytes'])}"
        for peer, values in status["peers"].items()
    )
    output = status["output"]
    free = output["free_bytes"]
    spool = status["spool_temporary_files"]
    deliveries = status["event_deliveries"]
    reloads = status["reloads"]
    last = status["last_reload_success"]
    lines = [
        (
            "Associations",
            f"{associations['accepted']} accepted, {sum(rejected.values())} rejected"
            + (f" ({reasons})" if reasons else "")
            + f", {associations['active']} active",
        ),
        (
            "Stored",
            f"{_counted(status['instances'], 'instance', 'instances')},"
            f" {size(status['bytes'])}" + (f" ({peers})" if peers else ""),
        ),
        (
            "Output",
            ("free space unknown" if free is None else f"{size(free)} free")
            + f", reserve {size(output['reserve_bytes'])}",
        ),
        (
            "Spool",
            "unknown" if spool is None else _counted(spool, "temporary file", "temporary files"),
        ),
        (
            "Events",
            "off"
            if deliveries is None
            else ", ".join(f"{count} {state}" for state, count in deliveries.items())
            + " deliveries",
        ),
        (
            "Reloads",
            ", ".join(
                f"{count} {'succeeded' if result == 'success' else result}"
                for result, count in reloads.items()
            )
            + (f"; last success {local_time(last)}" if last else ""),
        ),
        (
            "Workers",
            f"{len(status['workers'])} running, {status['worker_starts']} started,"
            f" {status['worker_deaths']} died unasked",
        ),
        ("TLS", f"{status['tls_handshake_failures']} failed handshakes"),
        ("PROXY", _proxy(status["proxy"])),
        ("Commitment", _commitment(status["commitment"])),
    ]
    width = max(len(label) for label, _ in lines)
    return [f"{label.ljust(width)}  {text}" for label, text in lines]


def _workers(status: Document) -> list[str]:
    if not status["workers"]:
        return ["Workers: none"]
    rows = [
        [
            str(worker["pid"]),
            str(worker["active"]),
            "yes" if worker["accepting"] else "no",
            "-" if worker["beat_age"] is None else age(worker["beat_age"]),
            str(worker["associations"]),
            str(worker["instances"]),
            size(worker["bytes"]),
        ]
        for worker in status["workers"]
    ]
    headers = ["PID", "ACTIVE", "ACCEPTING", "BEAT", "ASSOCIATIONS", "INSTANCES", "BYTES"]
    return ["Workers:", *("  " + line for line in _table(headers, rows, ">><>>>>"))]


def _live(status: Document) -> list[str]:
    live = status["live"]
    if not live:
        return ["Associations in progress: none"]
    lines = [f"Associations in progress ({len(live)}):"]
    for association in live:
        indent = " " * (len(association["id"]) + 4)
        current = association["current_sop_instance_uid"]
        lines += [
            f"  {_shown(association['id'])}  {_shown(association['calling_aetitle'])} ->"
            f" {_shown(association['called_aetitle'])}"
            f"  from {_shown(association['peer_address'])}"
            f" (peer {_shown(association['peer'])}),"
            f" {'TLS' if association['tls'] else 'no TLS'}, worker {association['worker']}",
            f"{indent}started {local_time(association['started'])}"
            f" ({age(status['time'] - association['started'])} ago),"
            f" {_counted(association['instances'], 'instance', 'instances')},"
            f" {size(association['bytes'])}",
            f"{indent}"
            + (
                f"receiving {_shown(current)}, {size(association['current_bytes'])} so far"
                if current
                else "between objects"
            ),
        ]
    return lines


def render(status: Document) -> str:
    """The document as text for a terminal."""
    title = f"dcmrecvd {status['version']} at {local_time(status['time'])}"
    if status["config_sha256"]:
        title += f", configuration sha256 {status['config_sha256'][:12]}"
    sections = [[title, *_header(status)], _workers(status), _live(status)]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"
