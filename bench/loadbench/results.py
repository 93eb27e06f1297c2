"""What a window measured: every run, and the medians the table shows."""

from __future__ import annotations

from dataclasses import dataclass, field

from .probes import DiskRate, LoopbackRate
from .scenarios import Scenario
from .stats import median, percentile, ratio
from .verify import Verification


@dataclass
class Run:
    """One receiver's run of one repetition of a scenario.

    instances and bytes count what was stored while the load ran: the corpus, and the
    probe's instances answered before the last storescu ended.
    """

    receiver: str
    rep: int
    position: int
    argv: list[str] = field(default_factory=list)
    instances: int = 0
    bytes: int = 0
    wall_s: float | None = None
    cpu_user_s: float | None = None
    cpu_sys_s: float | None = None
    sender_cpu_s: float | None = None
    peak_rss_mib: float | None = None
    tree_rss_mib: float | None = None
    latency_ms: list[float] = field(default_factory=list)
    probed: bool = False
    # SOP Instance UIDs the probe got Success for, during the load or just after it.
    stored_by_probe: list[str] = field(default_factory=list)
    probe_exhausted: bool = False
    listen_s: float | None = None
    echo_s: float | None = None
    verification: Verification | None = None
    errors: list[str] = field(default_factory=list)
    # The end of the receiver's log, kept when the run had errors.
    log_tail: str = ""

    @property
    def verified(self) -> bool:
        return self.verification is not None and self.verification.ok and not self.errors

    @property
    def inst_per_s(self) -> float | None:
        return ratio(self.instances, self.wall_s)

    @property
    def mb_per_s(self) -> float | None:
        return ratio(self.bytes / 1e6, self.wall_s)

    @property
    def cpu_ms_per_instance(self) -> float | None:
        if self.cpu_user_s is None or self.cpu_sys_s is None:
            return None
        return ratio((self.cpu_user_s + self.cpu_sys_s) * 1000, self.instances)

    def latency(self, p: float) -> float | None:
        return percentile(self.latency_ms, p) if self.latency_ms else None


@dataclass
class LimitsRun:
    """The physical limits, measured at their turn in a repetition."""

    rep: int
    position: int
    disk: DiskRate | None = None
    loopback: LoopbackRate | None = None
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Summary:
    """Medians over a receiver's verified runs."""

    receiver: str
    runs: int
    verified: int
    inst_per_s: float | None
    mb_per_s: float | None
    cpu_ms_per_instance: float | None
    peak_rss_mib: float | None
    tree_rss_mib: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    # Per run: a p99 of fewer than 100 samples is their largest.
    latency_samples: float | None
    echo_s: float | None
    probed: bool


@dataclass(frozen=True)
class LimitsSummary:
    """Medians of the physical limits."""

    writers: int
    disk_files_per_s: float | None
    disk_mb_per_s: float | None
    disk_p50_ms: float | None
    disk_p99_ms: float | None
    loopback_mb_per_s: float | None
    tls: bool


@dataclass
class ScenarioResult:
    scenario: Scenario
    subject: str
    reference: str
    instances: int
    bytes: int
    runs: list[Run] = field(default_factory=list)
    limits: list[LimitsRun] = field(default_factory=list)

    @property
    def title(self) -> str:
        return self.scenario.title(self.instances, self.bytes)

    def summary(self, receiver: str) -> Summary:
        runs = [run for run in self.runs if run.receiver == receiver]
        good = [run for run in runs if run.verified]
        return Summary(
            receiver=receiver,
            runs=len(runs),
            verified=len(good),
            inst_per_s=median(run.inst_per_s for run in good),
            mb_per_s=median(run.mb_per_s for run in good),
            cpu_ms_per_instance=median(run.cpu_ms_per_instance for run in good),
            peak_rss_mib=median(run.peak_rss_mib for run in good),
            tree_rss_mib=median(run.tree_rss_mib for run in good),
            latency_p50_ms=median(run.latency(50) for run in good),
            latency_p99_ms=median(run.latency(99) for run in good),
            latency_samples=median(len(run.latency_ms) for run in good if run.probed),
            echo_s=median(run.echo_s for run in good),
            probed=any(run.probed for run in runs),
        )

    def limits_summary(self) -> LimitsSummary:
        disks = [run.disk for run in self.limits if run.disk is not None]
        loops = [run.loopback for run in self.limits if run.loopback is not None]
        return LimitsSummary(
            writers=self.scenario.associations,
            disk_files_per_s=median(disk.files_per_s for disk in disks),
            disk_mb_per_s=median(disk.mb_per_s for disk in disks),
            disk_p50_ms=median(disk.p50_ms for disk in disks),
            disk_p99_ms=median(disk.p99_ms for disk in disks),
            loopback_mb_per_s=median(loop.mb_per_s for loop in loops),
            tls=self.scenario.tls,
        )

    def errors(self) -> list[str]:
        found = [f"{run.receiver} rep {run.rep}: {e}" for run in self.runs for e in run.errors]
        found += [f"limits rep {run.rep}: {e}" for run in self.limits for e in run.errors]
        for run in self.runs:
            if run.verification is not None and not run.verification.ok:
                problems = run.verification.problems()
                found.append(f"{run.receiver} rep {run.rep}: verification: {problems}")
        return found
