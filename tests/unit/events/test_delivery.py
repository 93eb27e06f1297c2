"""Delivering recorded events over a real index file: manifests into the maildir, hooks
run as real processes by a real HookRunner. The deliverer's epoch clock is a fake one,
so retry backoff is driven without waiting; hook timeouts use the runner's own clock."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from dcmrecvd import eventrecords
from dcmrecvd.events import delivery
from dcmrecvd.events.delivery import Deliverer
from dcmrecvd.events.hookrunner import Finished, HookRunner
from dcmrecvd.settings import EventKind, EventSettings, Hook
from dcmrecvd.store.index import Entry, Index, IndexFailure, NewEvent, insert_event

T0 = 1_800_000_000.0
STUDY = "1.2.840.99.1"
SERIES = "1.2.840.99.1.2"
CT = "1.2.840.10008.5.1.4.1.1.2"
EVENTS_LOGGER = "dcmrecv.events"
RUNNER_LOGGER = "test.delivery.hooks"
# How long a condition that should come true at once may take on a loaded machine.
DEADLINE = 10.0
# What one round of the loop waits for a hook to finish (the events process waits 0.2).
POLL = 0.1

# A hook that records how it was run into the folder it lies in: a line per run in
# `runs`, and per event id its argv, environment and the text of its manifest copy. It
# then waits while `block` exists, and exits with the status in `status` (or 0).
HOOK_SCRIPT = """\
import json, os, sys, time
from pathlib import Path

out = Path(__file__).resolve().parent
event_id = os.environ.get("DCMRECVD_EVENT_ID", "")
copy = os.environ.get("DCMRECVD_MANIFEST", "")
record = {
    "argv": sys.argv[1:],
    "env": {name: os.environ.get(name) for name in (
        "DCMRECVD_EVENT_ID", "DCMRECVD_EVENT", "DCMRECVD_MANIFEST", "PATH")},
    "names": sorted(os.environ),
    "manifest": Path(copy).read_text() if copy else None,
}
(out / (event_id + ".json")).write_text(json.dumps(record))
with open(out / "runs", "a") as runs:
    runs.write(event_id + "\\n")
while (out / "block").exists():
    time.sleep(0.01)
status = out / "status"
sys.exit(int(status.read_text()) if status.exists() else 0)
"""


class Clock:
    """Epoch seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = T0 + 1.0

    def __call__(self) -> float:
        return self.now


class Row(NamedTuple):
    state: str
    attempts: int
    due: float
    detail: str


@pytest.fixture
def listing(tmp_path: Path) -> Iterator[Index]:
    with Index(tmp_path / "index.db") as opened:
        yield opened


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    """The events directory (not made: the deliverer makes it)."""
    return tmp_path / "events"


@pytest.fixture
def caplogged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=EVENTS_LOGGER)
    caplog.set_level(logging.INFO, logger=RUNNER_LOGGER)
    return caplog


@pytest.fixture
def runner(caplogged: pytest.LogCaptureFixture) -> Iterator[HookRunner]:
    hooks = HookRunner(logging.getLogger(RUNNER_LOGGER))
    yield hooks
    hooks.terminate_all(0.0)


@pytest.fixture
def hook_dir(tmp_path: Path) -> Path:
    """Where the recording hook (hook.py) lies and writes what it saw."""
    folder = tmp_path / "hook"
    folder.mkdir()
    (folder / "hook.py").write_text(HOOK_SCRIPT)
    return folder


def recording_hook(hook_dir: Path, name: str = "ok", **changes: Any) -> Hook:
    """A Hook running hook.py with placeholders in separate arguments."""
    hook = Hook(
        name,
        EventKind.SERIES_COMPLETE,
        (
            sys.executable,
            str(hook_dir / "hook.py"),
            "--study={StudyInstanceUID}",
            "{manifest}",
            "{event_id}",
        ),
    )
    return dataclasses.replace(hook, **changes)


def settings_for(directory: Path, *hooks: Hook, concurrency: int = 2) -> EventSettings:
    return EventSettings(
        directory=str(directory),
        manifests=frozenset({EventKind.SERIES_COMPLETE}),
        hooks=hooks,
        hook_concurrency=concurrency,
    )


def manifest_text(event_id: str) -> str:
    stored = Entry(
        path=f"/data/{STUDY}/{SERIES}/{event_id}.dcm",
        sop_class_uid=CT,
        sop_instance_uid=f"{SERIES}.7",
        study_instance_uid=STUDY,
        series_instance_uid=SERIES,
        patient_id="P1",
        modality="CT",
        calling_ae="CT1",
        called_ae="DCMRECVD",
        peer_address="192.0.2.7",
        transfer_syntax="1.2.840.10008.1.2.1",
        size=1000,
        received_at=T0 - 60,
        association_id="a1",
    )
    occurrence = eventrecords.Occurrence(
        kind=EventKind.SERIES_COMPLETE,
        id=event_id,
        created_at=T0,
        study_instance_uid=STUDY,
        series_instance_uid=SERIES,
        generation=1,
        reason="quiet",
    )
    return eventrecords.encode(eventrecords.manifest(occurrence, [stored]))


def new_event(event_id: str, targets: tuple[str, ...]) -> NewEvent:
    return NewEvent(
        id=event_id,
        kind=EventKind.SERIES_COMPLETE.value,
        created_at=T0,
        study_instance_uid=STUDY,
        series_instance_uid=SERIES,
        generation=1,
        manifest=manifest_text(event_id),
        targets=targets,
    )


def record(listing: Index, event_id: str, *targets: str) -> int:
    """Record an event with its pending deliveries (due at T0); its sequence."""
    event = new_event(event_id, targets)
    return listing.transaction(lambda c: insert_event(c, event), write=True)


def row(listing: Index, seq: int, target: str) -> Row:
    found = listing.transaction(
        lambda c: c.execute(
            "SELECT state, attempts, due, detail FROM deliveries WHERE seq = ? AND target = ?",
            (seq, target),
        ).fetchone(),
        write=False,
    )
    assert found is not None
    return Row(*found)


def stored_manifest(listing: Index, seq: int) -> str:
    (text,) = listing.transaction(
        lambda c: c.execute("SELECT manifest FROM events WHERE seq = ?", (seq,)).fetchone(),
        write=False,
    )
    assert isinstance(text, str)
    return text


def set_pending(listing: Index, seq: int, target: str) -> None:
    listing.transaction(
        lambda c: c.execute(
            "UPDATE deliveries SET state = 'pending' WHERE seq = ? AND target = ?", (seq, target)
        ),
        write=True,
    )


def cycle(deliverer: Deliverer) -> None:
    """One round of the events process's loop."""
    deliverer.start_due()
    deliverer.finish(deliverer.runner.poll(POLL))


def drive(deliverer: Deliverer, condition: Callable[[], bool]) -> None:
    """Rounds of the loop until `condition` holds."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"condition never came true; {deliverer.runner.running}"
        cycle(deliverer)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == EVENTS_LOGGER and r.levelno == level
    ]


def copy_path(directory: Path, seq: int, hook: str, event_id: str) -> Path:
    return directory / "hooks" / f"{seq:012d}.{hook}.{event_id}.json"


def test_hook_copies_of_two_nodes_events_with_one_sequence_number_differ() -> None:
    """Nodes sharing an events directory each number their events in their own index."""
    ours, theirs = (
        delivery.Delivery(7, "hook:notify", 0, event_id, "series-complete", STUDY, "1.2", "{}")
        for event_id in ("ev-a", "ev-b")
    )
    assert delivery.hook_copy_name(ours) == "000000000007.notify.ev-a.json"
    assert delivery.hook_copy_name(theirs) == "000000000007.notify.ev-b.json"


def test_a_manifest_lands_whole_in_new_and_is_rewritten_under_the_same_name(
    listing: Index, runner: HookRunner, directory: Path
) -> None:
    clock = Clock()
    seq = record(listing, "ev-1", "manifest")
    deliverer = Deliverer(listing, settings_for(directory), runner, clock)
    deliverer.start_due()

    name = f"{seq:012d}.series-complete.ev-1.json"
    assert os.listdir(directory / "new") == [name]
    assert (directory / "new" / name).read_text() == stored_manifest(listing, seq)
    assert os.listdir(directory / "tmp") == []
    assert row(listing, seq, "manifest") == Row("done", 1, clock.now, str(directory / "new" / name))
    assert runner.running == frozenset()

    # Delivered again (as after a crash before the state was recorded): the same name.
    (directory / "new" / name).write_text("taken and replaced by a consumer")
    set_pending(listing, seq, "manifest")
    clock.now += 1
    deliverer.start_due()
    assert os.listdir(directory / "new") == [name]
    assert (directory / "new" / name).read_text() == stored_manifest(listing, seq)
    assert os.listdir(directory / "tmp") == []
    assert row(listing, seq, "manifest") == Row("done", 2, clock.now, str(directory / "new" / name))


def test_a_manifest_that_cannot_be_written_is_retried_with_backoff_until_it_is(
    listing: Index,
    runner: HookRunner,
    directory: Path,
    caplogged: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    directory.write_text("a regular file where the directory should be")
    seq = record(listing, "ev-1", "manifest")
    deliverer = Deliverer(listing, settings_for(directory), runner, clock)

    deliverer.start_due()
    first = row(listing, seq, "manifest")
    assert first[:3] == ("pending", 1, clock.now + delivery.MANIFEST_RETRY_DELAY)
    assert "File exists" in first.detail
    assert any("cannot write the manifest" in m for m in messages(caplogged, logging.ERROR))

    # Not tried before it is due: the attempts would have counted another failure.
    clock.now += delivery.MANIFEST_RETRY_DELAY - 0.5
    deliverer.start_due()
    assert row(listing, seq, "manifest") == first

    # Due, still broken: the wait doubles.
    clock.now += 0.5
    deliverer.start_due()
    assert row(listing, seq, "manifest")[:3] == (
        "pending",
        2,
        clock.now + 2 * delivery.MANIFEST_RETRY_DELAY,
    )

    directory.unlink()
    clock.now += 2 * delivery.MANIFEST_RETRY_DELAY
    deliverer.start_due()
    name = f"{seq:012d}.series-complete.ev-1.json"
    assert (directory / "new" / name).read_text() == stored_manifest(listing, seq)
    assert row(listing, seq, "manifest") == Row("done", 3, clock.now, str(directory / "new" / name))


def test_a_hook_gets_its_own_copy_its_placeholders_and_a_clean_environment(
    listing: Index, runner: HookRunner, directory: Path, hook_dir: Path
) -> None:
    clock = Clock()
    seq = record(listing, "ev-1", "manifest", "hook:ok")
    deliverer = Deliverer(listing, settings_for(directory, recording_hook(hook_dir)), runner, clock)

    drive(deliverer, lambda: row(listing, seq, "hook:ok").state != "pending")

    assert row(listing, seq, "hook:ok") == Row("done", 1, clock.now, "exited with status 0")
    assert row(listing, seq, "manifest").state == "done"
    copy = copy_path(directory, seq, "ok", "ev-1")
    seen = json.loads((hook_dir / "ev-1.json").read_text())
    assert seen["argv"] == [f"--study={STUDY}", str(copy), "ev-1"]
    assert seen["env"] == {
        "DCMRECVD_EVENT_ID": "ev-1",
        "DCMRECVD_EVENT": "series-complete",
        "DCMRECVD_MANIFEST": str(copy),
        "PATH": delivery.HOOK_PATH,
    }
    # Nothing of the daemon's own environment (Python may add LC_CTYPE itself: PEP 538).
    assert set(seen["names"]) - {"LC_CTYPE"} == set(seen["env"])
    assert seen["manifest"] == stored_manifest(listing, seq)
    assert lines(hook_dir / "runs") == ["ev-1"]
    # The hook's copy is its own, and gone once the delivery has ended.
    assert not copy.exists()
    assert os.listdir(directory / "hooks") == []
    assert os.listdir(directory / "new") == [f"{seq:012d}.series-complete.ev-1.json"]


def test_a_failing_hook_is_retried_with_doubling_backoff_then_given_up(
    listing: Index,
    runner: HookRunner,
    directory: Path,
    tmp_path: Path,
    caplogged: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    runs = tmp_path / "runs"
    flaky = Hook(
        "flaky",
        EventKind.SERIES_COMPLETE,
        ("/bin/sh", "-c", 'echo run >> "$0"; exit 3', str(runs)),
        retries=2,
        retry_delay=10.0,
    )
    seq = record(listing, "ev-1", "hook:flaky")
    deliverer = Deliverer(listing, settings_for(directory, flaky), runner, clock)

    drive(deliverer, lambda: row(listing, seq, "hook:flaky").attempts == 1)
    first = clock.now
    assert row(listing, seq, "hook:flaky") == Row("pending", 1, first + 10, "exited with status 3")
    assert len(lines(runs)) == 1

    # Not started again before it is due.
    clock.now = first + 9
    for _ in range(3):
        cycle(deliverer)
        assert runner.running == frozenset()
    assert len(lines(runs)) == 1
    assert row(listing, seq, "hook:flaky").attempts == 1

    clock.now = first + 10
    drive(deliverer, lambda: row(listing, seq, "hook:flaky").attempts == 2)
    assert row(listing, seq, "hook:flaky") == Row(
        "pending", 2, first + 10 + 20, "exited with status 3"
    )
    assert len(lines(runs)) == 2

    clock.now = first + 29
    cycle(deliverer)
    assert runner.running == frozenset()
    assert len(lines(runs)) == 2

    clock.now = first + 30
    drive(deliverer, lambda: row(listing, seq, "hook:flaky").attempts == 3)
    assert row(listing, seq, "hook:flaky") == Row("failed", 3, first + 30, "exited with status 3")
    assert len(lines(runs)) == 3

    # Never again, however long it waits.
    clock.now = first + 10 * delivery.MAX_BACKOFF
    for _ in range(2):
        cycle(deliverer)
        assert runner.running == frozenset()
    assert len(lines(runs)) == 3
    assert row(listing, seq, "hook:flaky").state == "failed"
    assert not copy_path(directory, seq, "flaky", "ev-1").exists()
    errors = messages(caplogged, logging.ERROR)
    assert len(errors) == 1
    assert "hook flaky failed" in errors[0] and "not tried again" in errors[0]
    assert len([m for m in messages(caplogged, logging.WARNING) if "retry" in m]) == 2


def test_a_hook_that_times_out_counts_as_a_failed_attempt(
    listing: Index, runner: HookRunner, directory: Path
) -> None:
    clock = Clock()
    slow = Hook(
        "slow",
        EventKind.SERIES_COMPLETE,
        ("/bin/sh", "-c", "sleep 30"),
        timeout=0.5,
        retries=1,
        retry_delay=7.0,
    )
    seq = record(listing, "ev-1", "hook:slow")
    deliverer = Deliverer(listing, settings_for(directory, slow), runner, clock)

    started = time.monotonic()
    drive(deliverer, lambda: row(listing, seq, "hook:slow").attempts == 1)
    assert time.monotonic() - started >= 0.5
    found = row(listing, seq, "hook:slow")
    assert found[:3] == ("pending", 1, clock.now + 7.0)
    assert "timeout" in found.detail and "0.5" in found.detail
    assert runner.running == frozenset()


def test_a_delivery_whose_hook_left_the_settings_is_dropped(
    listing: Index,
    runner: HookRunner,
    directory: Path,
    hook_dir: Path,
    caplogged: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    settings = settings_for(directory, recording_hook(hook_dir, "gone"))
    seq = record(listing, "ev-1", "hook:gone")
    deliverer = Deliverer(listing, settings, runner, clock)
    deliverer.settings = dataclasses.replace(settings, hooks=())

    cycle(deliverer)
    assert row(listing, seq, "hook:gone") == Row("dropped", 0, clock.now, "hook removed")
    assert runner.running == frozenset()
    assert lines(hook_dir / "runs") == []
    assert any(
        "no [hook gone] in the configuration any more" in m
        for m in messages(caplogged, logging.WARNING)
    )
    # Dropped is final.
    clock.now += 10 * delivery.MAX_BACKOFF
    deliverer.settings = settings
    cycle(deliverer)
    assert row(listing, seq, "hook:gone").state == "dropped"
    assert lines(hook_dir / "runs") == []


def test_a_dropped_delivery_leaves_no_manifest_copy_behind(
    listing: Index, runner: HookRunner, directory: Path, hook_dir: Path
) -> None:
    clock = Clock()
    (hook_dir / "status").write_text("3")
    settings = settings_for(directory, recording_hook(hook_dir, "gone", retry_delay=10.0))
    seq = record(listing, "ev-1", "hook:gone")
    deliverer = Deliverer(listing, settings, runner, clock)
    drive(deliverer, lambda: row(listing, seq, "hook:gone").attempts == 1)
    assert row(listing, seq, "hook:gone").state == "pending"

    deliverer.settings = dataclasses.replace(settings, hooks=())
    clock.now += 10
    cycle(deliverer)
    assert row(listing, seq, "hook:gone").state == "dropped"
    assert not copy_path(directory, seq, "gone", "ev-1").exists()


def test_no_more_hooks_run_at_once_than_the_concurrency(
    listing: Index, runner: HookRunner, directory: Path, hook_dir: Path
) -> None:
    clock = Clock()
    block = hook_dir / "block"
    block.touch()
    ids = [f"ev-{n}" for n in range(1, 6)]
    seqs = [record(listing, event_id, "hook:wait") for event_id in ids]
    settings = settings_for(directory, recording_hook(hook_dir, "wait"), concurrency=2)
    deliverer = Deliverer(listing, settings, runner, clock)

    deliverer.start_due()
    assert len(runner.running) == 2
    # Both have really started, and stay the only ones while they block.
    deadline = time.monotonic() + DEADLINE
    while len(lines(hook_dir / "runs")) < 2:
        assert time.monotonic() < deadline, "the first two hooks never started"
        cycle(deliverer)
        assert len(runner.running) == 2
    for _ in range(3):
        cycle(deliverer)
        assert len(runner.running) == 2
    assert sorted(lines(hook_dir / "runs")) == ids[:2]
    assert [row(listing, seq, "hook:wait").state for seq in seqs] == ["pending"] * 5

    block.unlink()
    deadline = time.monotonic() + DEADLINE
    while any(row(listing, seq, "hook:wait").state == "pending" for seq in seqs):
        assert time.monotonic() < deadline, "the hooks never all finished"
        cycle(deliverer)
        assert len(runner.running) <= 2
    assert sorted(lines(hook_dir / "runs")) == ids
    assert [row(listing, seq, "hook:wait")[:2] for seq in seqs] == [("done", 1)] * 5


def test_stopping_terminates_a_running_hook_without_counting_an_attempt(
    listing: Index,
    runner: HookRunner,
    directory: Path,
    hook_dir: Path,
    caplogged: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    block = hook_dir / "block"
    block.touch()
    settings = settings_for(directory, recording_hook(hook_dir, "wait"))
    seq = record(listing, "ev-1", "hook:wait")
    deliverer = Deliverer(listing, settings, runner, clock)
    drive(deliverer, lambda: len(lines(hook_dir / "runs")) == 1)
    assert len(runner.running) == 1

    deliverer.stop(2.0)
    assert runner.running == frozenset()
    assert block.exists()  # so it did not end by itself: it was terminated
    assert row(listing, seq, "hook:wait") == Row("pending", 0, T0, "")
    assert any("runs again at the next start" in m for m in messages(caplogged, logging.INFO))

    # The next start (a new deliverer, as after a restart) runs it again.
    block.unlink()
    again = Deliverer(listing, settings, runner, clock)
    drive(again, lambda: row(listing, seq, "hook:wait").state != "pending")
    assert row(listing, seq, "hook:wait") == Row("done", 1, clock.now, "exited with status 0")
    assert lines(hook_dir / "runs") == ["ev-1", "ev-1"]


def zombie(pid: int) -> bool:
    """Whether `pid` has exited and is not reaped yet."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_stopping_records_a_hook_that_had_already_finished(
    listing: Index, runner: HookRunner, directory: Path, tmp_path: Path
) -> None:
    clock = Clock()
    pid_file = tmp_path / "pid"
    quick = Hook(
        "quick", EventKind.SERIES_COMPLETE, ("/bin/sh", "-c", 'echo $$ > "$0"', str(pid_file))
    )
    seq = record(listing, "ev-1", "hook:quick")
    deliverer = Deliverer(listing, settings_for(directory, quick), runner, clock)
    deliverer.start_due()
    # It exits at once; nothing polls the runner, so it stays unreaped until stop.
    deadline = time.monotonic() + DEADLINE
    while not (pid_file.exists() and pid_file.read_text().endswith("\n")):
        assert time.monotonic() < deadline, "the hook never ran"
        time.sleep(0.01)  # polling interval of the deadline loop, not synchronisation
    pid = int(pid_file.read_text())
    while not zombie(pid):
        assert time.monotonic() < deadline, "the hook never exited"
        time.sleep(0.01)  # polling interval of the deadline loop, not synchronisation

    deliverer.stop(1.0)
    assert row(listing, seq, "hook:quick")[:2] == ("done", 1)


def test_a_backlog_of_hook_deliveries_does_not_hold_up_a_due_manifest(
    listing: Index, runner: HookRunner, directory: Path
) -> None:
    clock = Clock()
    slow = Hook("slow", EventKind.SERIES_COMPLETE, ("/bin/sh", "-c", "sleep 30"))
    backlog = [new_event(f"ev-{n}", ("hook:slow",)) for n in range(200)]

    def insert_all(connection: sqlite3.Connection) -> None:
        for event in backlog:
            insert_event(connection, event)

    listing.transaction(insert_all, write=True)
    seq = record(listing, "late", "manifest")
    deliverer = Deliverer(listing, settings_for(directory, slow, concurrency=1), runner, clock)

    deliverer.start_due()
    assert len(runner.running) == 1
    assert row(listing, seq, "manifest")[:2] == ("done", 1)


def test_backoff_doubles_from_the_first_wait_up_to_the_cap() -> None:
    assert [delivery.backoff(30.0, n) for n in range(1, 6)] == [30.0, 60.0, 120.0, 240.0, 480.0]
    assert delivery.backoff(30.0, 8) == delivery.MAX_BACKOFF  # 30 * 128 = 3840
    assert delivery.backoff(30.0, 7) == 1920.0
    assert delivery.backoff(30.0, 500) == delivery.MAX_BACKOFF
    assert delivery.backoff(delivery.MANIFEST_RETRY_DELAY, 1) == delivery.MANIFEST_RETRY_DELAY


def test_backoff_stays_capped_however_many_attempts() -> None:
    assert delivery.backoff(delivery.MANIFEST_RETRY_DELAY, 1100) == delivery.MAX_BACKOFF


def test_an_end_the_index_cannot_record_is_held_and_recorded_later(
    listing: Index,
    runner: HookRunner,
    directory: Path,
    hook_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    seq = record(listing, "ev-held", "hook:ok")
    deliverer = Deliverer(listing, settings_for(directory, recording_hook(hook_dir)), runner, clock)
    deliverer.start_due()
    ended: list[tuple[Hashable, Finished]] = []
    deadline = time.monotonic() + DEADLINE
    while not ended:
        assert time.monotonic() < deadline, "the hook never ended"
        ended += runner.poll(POLL)
    real = Index.transaction

    def full_disk(self: Index, work: Callable[..., Any], *, write: bool) -> Any:
        if write:
            raise IndexFailure("database or disk is full")
        return real(self, work, write=write)

    monkeypatch.setattr(Index, "transaction", full_disk)
    with pytest.raises(IndexFailure):
        deliverer.finish(ended)
    # Not recorded, and not started again while it waits to be.
    deliverer.start_due()
    assert runner.running == frozenset()
    assert row(listing, seq, "hook:ok").state == "pending"
    monkeypatch.setattr(Index, "transaction", real)
    deliverer.finish([])
    assert row(listing, seq, "hook:ok") == Row("done", 1, clock.now, "exited with status 0")
    assert lines(hook_dir / "runs") == ["ev-held"]
