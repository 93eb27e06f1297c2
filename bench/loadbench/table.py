"""The window's results as one Markdown table, and as a JSON document."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .results import LimitsSummary, ScenarioResult, Summary
from .stats import median, ratio

HEADER = (
    "| scenario | receiver | inst/s | MB/s | CPU ms/inst | peak RSS MiB, process (tree)"
    " | latency p50 / p99 ms, samples | inst/s x {ref} | CPU x {ref} | inst/s x disk | verified |"
)
RULE = "|---|---|---|---|---|---|---|---|---|---|---|"
NOT_PROBED = (
    "Not probed: dcmrecv serves one association at a time, so the probe's would be served"
    " only after the load; nor is one big instance, whose probe pool would be as big."
)


def number(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def rate(value: float | None) -> str:
    """Three significant digits at most, no exponent: 1234, 123, 12.3, 1.23."""
    if value is None:
        return "n/a"
    return number(value, 0 if value >= 100 else 1 if value >= 10 else 2)


def pair(first: float | None, second: float | None, digits: int) -> str:
    if first is None and second is None:
        return "n/a"
    return f"{number(first, digits)} / {number(second, digits)}"


def receiver_row(title: str, summary: Summary, reference: Summary, disk: LimitsSummary) -> str:
    latency = pair(summary.latency_p50_ms, summary.latency_p99_ms, 2)
    if summary.latency_samples is not None:
        latency += f", n={summary.latency_samples:.0f}"
    if not summary.probed:
        latency = "not probed"
    rss = f"{number(summary.peak_rss_mib)} ({number(summary.tree_rss_mib)})"
    cells = [
        title,
        summary.receiver,
        rate(summary.inst_per_s),
        rate(summary.mb_per_s),
        number(summary.cpu_ms_per_instance, 2),
        rss if summary.peak_rss_mib is not None else "n/a",
        latency,
        number(ratio(summary.inst_per_s, reference.inst_per_s), 2),
        number(ratio(summary.cpu_ms_per_instance, reference.cpu_ms_per_instance), 2),
        number(ratio(summary.inst_per_s, disk.disk_files_per_s), 2),
        f"{summary.verified}/{summary.runs}",
    ]
    return "| " + " | ".join(cells) + " |"


def limit_rows(limits: LimitsSummary) -> list[str]:
    plural = "s" if limits.writers > 1 else ""
    disk = [
        "",
        f"disk: durable files, {limits.writers} writer{plural}",
        rate(limits.disk_files_per_s),
        rate(limits.disk_mb_per_s),
        "",
        "",
        pair(limits.disk_p50_ms, limits.disk_p99_ms, 2) + " per file",
        "",
        "",
        "1.00" if limits.disk_files_per_s else "n/a",
        "",
    ]
    loop = ["", f"loopback TCP{' + TLS' if limits.tls else ''}, 1 stream", ""]
    loop += [rate(limits.loopback_mb_per_s)] + [""] * 7
    return ["| " + " | ".join(cells) + " |" for cells in (disk, loop)]


def markdown(results: Sequence[ScenarioResult], repeat: int, reference_label: str) -> str:
    """The table: per scenario the subject, its reference, and the physical limits."""
    lines = [
        f"Medians of {repeat} alternating run(s) per cell; max PDU 131072; storescu with"
        " TCP_NODELAY=1; MB = 10^6 B of Part-10 files. inst/s, MB/s and CPU count the"
        " corpus and the probe's instances"
        " answered during the load; CPU is the receiver's process tree, user+sys; latency"
        " is the probe's, dataset end to C-STORE-RSP, under the load.",
        "",
        HEADER.format(ref=reference_label),
        RULE,
    ]
    notes = []
    for result in results:
        reference = result.summary(result.reference)
        limits = result.limits_summary()
        for name in (result.subject, result.reference):
            title = result.title if name == result.subject else ""
            lines.append(receiver_row(title, result.summary(name), reference, limits))
        lines += limit_rows(limits)
        notes += [f"{result.scenario.key}: {error}" for error in result.errors()]
        exhausted = {run.receiver for run in result.runs if run.probe_exhausted}
        notes += [
            f"{result.scenario.key}: {name}: the probe ran out of instances before the load ended"
            for name in sorted(exhausted)
        ]
    lines += ["", NOT_PROBED, "", startup(results)]
    if notes:
        lines += ["", "Problems:", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines)


def startup(results: Sequence[ScenarioResult]) -> str:
    """Process start to the first C-ECHO answered, per receiver, median over all runs."""
    seconds: dict[str, list[float | None]] = {}
    for result in results:
        for run in result.runs:
            seconds.setdefault(run.receiver, []).append(run.echo_s)
    found = []
    for name, values in seconds.items():
        value = median(values)
        found.append(f"{name} {number(value * 1000 if value is not None else None)} ms")
    return "Start to first C-ECHO answered (median of all runs): " + ", ".join(found) + "."


def _plain(value: Any) -> Any:
    """JSON-ready: dataclasses as dicts, paths as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def document(results: Sequence[ScenarioResult], context: dict[str, Any]) -> dict[str, Any]:
    """Everything: the context (options, machine), per scenario the summaries and runs."""
    scenarios = []
    for result in results:
        entry = _plain(result)
        entry["title"] = result.title
        entry["summary"] = {
            name: _plain(result.summary(name)) for name in (result.subject, result.reference)
        }
        entry["summary"]["limits"] = _plain(result.limits_summary())
        for run, plain in zip(result.runs, entry["runs"], strict=True):
            plain.update(
                verified=run.verified,
                inst_per_s=run.inst_per_s,
                mb_per_s=run.mb_per_s,
                cpu_ms_per_instance=run.cpu_ms_per_instance,
                latency_p50_ms=run.latency(50),
                latency_p99_ms=run.latency(99),
            )
        entry["errors"] = result.errors()
        scenarios.append(entry)
    return {**context, "scenarios": scenarios}


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1)
