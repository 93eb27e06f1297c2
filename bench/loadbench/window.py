"""One measurement window: each scenario's receivers and the physical-limits probe, run
in turn, repetition after repetition, who goes first rotating, so that the drift of this
shared machine hits them all alike."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import certs, corpus, probes, proctree, push, receivers, verify
from .corpus import Corpus
from .ports import free_port
from .receivers import Receiver
from .results import LimitsRun, Run, ScenarioResult
from .scenarios import Scenario
from .ulclient import TlsFiles

LIMITS = "limits"
# A receiver counts as settled after start-up once its tree used less than this CPU
# over a quiet interval: dcmrecvd's second worker may still be starting when the first
# answers the C-ECHO, and that start-up is not the transfer's cost.
QUIET_S, QUIET_INTERVAL_S, SETTLE_DEADLINE_S = 0.01, 0.1, 10.0
# Loopback volume at least this, so that a tiny corpus still gives a rate worth reading.
LOOPBACK_MIN_BYTES = 100_000_000


@dataclass(frozen=True)
class Options:
    workdir: Path
    corpora: Path
    repeat: int
    count: int | None
    seed: int
    big_mb: int
    probe_interval: float
    sample: int
    timeout: float
    keep: bool
    subject: Receiver
    # Replaces the scenarios' DCMTK reference (a before/after comparison).
    baseline: Receiver | None = None


Progress = Callable[[str], None]


def order(participants: list[str], rep: int) -> list[str]:
    """Repetition `rep`'s order: the list rotated by `rep`, so each goes first in turn."""
    shift = rep % len(participants)
    return participants[shift:] + participants[:shift]


def corpora(options: Options, scenario: Scenario) -> tuple[Corpus, Corpus | None]:
    """The scenario's corpus, and the probe's pool: as many instances of the same kind."""
    count = options.count or corpus.DEFAULT_COUNTS[scenario.kind]
    found = {}
    for stream in ("load", "probe") if scenario.probe else ("load",):
        directory = corpus.corpus_dir(
            options.corpora,
            scenario.kind,
            count,
            options.seed,
            stream=stream,
            size_mb=options.big_mb,
        )
        manifest = corpus.ensure(
            directory, scenario.kind, count, options.seed, stream=stream, size_mb=options.big_mb
        )
        found[stream] = Corpus(manifest, directory)
    return found["load"], found.get("probe")


def warm(paths: list[Path]) -> None:
    """Read the files once, so that storescu reads them from the page cache."""
    for path in paths:
        with open(path, "rb") as stream:
            while stream.read(1 << 22):
                pass


def settle(started: receivers.Started) -> None:
    """Wait until the receiver is idle, or the deadline passes."""
    deadline = time.monotonic() + SETTLE_DEADLINE_S
    before = sum(started.tree_cpu())
    while time.monotonic() < deadline:
        time.sleep(QUIET_INTERVAL_S)  # the interval over which idleness is measured
        now = sum(started.tree_cpu())
        if now - before < QUIET_S:
            return
        before = now


def fresh(directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


@dataclass(frozen=True)
class Turn:
    """What one run of a repetition works on."""

    scenario: Scenario
    rep: int
    position: int
    load: Corpus
    pool: Corpus | None
    tls: TlsFiles | None
    options: Options

    def directory(self, name: str) -> Path:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        return self.options.workdir / "runs" / self.scenario.key / f"rep{self.rep}-{slug}"


def measure(turn: Turn, receiver: Receiver, started: receivers.Started, run: Run) -> None:
    """Push the corpus to the started receiver and fill in `run`'s measurements."""
    settle(started)
    manifest = turn.load.manifest
    sampler = proctree.MemorySampler(started.pid)
    sampler.sample()
    user0, sys0 = started.tree_cpu()
    sampler.start()
    probe = None
    if turn.pool is not None and not receiver.serial:
        probe = probes.LatencyProbe(turn.pool, started.port, turn.tls, turn.options.probe_interval)
        probe.start()
        run.probed = True
    try:
        pushed = push.push(
            turn.load.paths(),
            started.port,
            turn.scenario.associations,
            tls=turn.tls,
            logdir=started.log.parent,
            timeout=turn.options.timeout,
        )
        user1, sys1 = started.tree_cpu()
    finally:
        if probe is not None:
            probe.finish()
        sampler.finish()
    run.wall_s, run.sender_cpu_s = pushed.wall_s, pushed.sender_cpu_s
    run.cpu_user_s, run.cpu_sys_s = user1 - user0, sys1 - sys0
    run.peak_rss_mib = sampler.largest_hwm_kib / 1024
    run.tree_rss_mib = sampler.largest_sum_kib / 1024
    run.errors += pushed.errors
    run.instances, run.bytes = manifest.count, manifest.total_bytes
    if probe is not None:
        run.errors += probe.errors
        run.probe_exhausted = probe.exhausted
        run.latency_ms = probes.under_load(probe.samples, pushed.ended)
        run.stored_by_probe = probe.stored()
        sizes = {entry.sop_instance_uid: entry.bytes for entry in probe.pool.manifest.entries}
        in_window = probes.stored_under_load(probe.samples, pushed.ended)
        run.instances += len(in_window)
        run.bytes += sum(sizes[uid] for uid in in_window)


def run_receiver(turn: Turn, receiver: Receiver) -> Run:
    """One receiver's run: start, settle, push and probe, stop, verify, clean up."""
    run = Run(receiver.name, turn.rep, turn.position)
    base = turn.directory(receiver.name)
    outdir, scratch, logs = (fresh(base / name) for name in ("out", "scratch", "logs"))
    # Dirty pages of the run before would otherwise be written back during this one.
    os.sync()
    launch = receivers.Launch(free_port(), outdir, scratch, turn.scenario.associations, turn.tls)
    try:
        started = receivers.start(receiver, launch, logs / "receiver.log")
    except (OSError, RuntimeError) as exc:
        run.errors.append(f"start: {type(exc).__name__}: {exc}")
        return run
    run.argv, run.listen_s, run.echo_s = started.argv, started.listen_s, started.echo_s
    try:
        measure(turn, receiver, started, run)
    except (OSError, RuntimeError) as exc:
        run.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        started.stop()
    run.errors += started.notes
    if run.errors:
        run.log_tail = started.log_tail(1500)
    expected = turn.load.by_uid()
    if turn.pool is not None:
        # What the probe stored, during the load or after it, is on disk too.
        pool = turn.pool.by_uid()
        expected.update((uid, pool[uid]) for uid in run.stored_by_probe)
    run.verification = verify.verify(outdir, expected, turn.options.sample, seed=turn.rep)
    if not turn.options.keep:
        shutil.rmtree(outdir, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return run


def run_limits(turn: Turn) -> LimitsRun:
    """Durable files with as many writers as the scenario has associations, in the
    receivers' file system; then one loopback stream, TLS in a TLS scenario."""
    limits = LimitsRun(turn.rep, turn.position)
    manifest = turn.load.manifest
    directory = fresh(turn.directory(LIMITS))
    os.sync()
    try:
        limits.disk = probes.durable_file_rate(
            directory, turn.scenario.associations, manifest.count, manifest.mean_bytes
        )
        limits.loopback = probes.loopback_rate(
            max(manifest.total_bytes, LOOPBACK_MIN_BYTES), turn.tls
        )
    except (OSError, RuntimeError) as exc:
        limits.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return limits


def run_scenario(scenario: Scenario, options: Options, progress: Progress) -> ScenarioResult:
    load, pool = corpora(options, scenario)
    warm(load.paths() + (pool.paths() if pool is not None else []))
    tls = certs.self_signed(options.workdir / "tls") if scenario.tls else None
    reference = options.baseline or scenario.reference
    by_name = {options.subject.name: options.subject, reference.name: reference}
    result = ScenarioResult(
        scenario,
        options.subject.name,
        reference.name,
        load.manifest.count,
        load.manifest.total_bytes,
    )
    for rep in range(options.repeat):
        for position, name in enumerate(order([*by_name, LIMITS], rep)):
            turn = Turn(scenario, rep, position, load, pool, tls, options)
            if name == LIMITS:
                limits = run_limits(turn)
                result.limits.append(limits)
                disk = f"{limits.disk.files_per_s:.0f} files/s" if limits.disk else "failed"
                progress(f"{scenario.key} rep {rep}: limits: disk {disk}")
                continue
            run = run_receiver(turn, by_name[name])
            result.runs.append(run)
            rate = f"{run.inst_per_s:.0f} inst/s" if run.inst_per_s else "no rate"
            state = "verified" if run.verified else "NOT VERIFIED"
            progress(f"{scenario.key} rep {rep}: {name}: {rate}, {state}")
    return result
