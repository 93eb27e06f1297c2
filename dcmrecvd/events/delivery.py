"""Delivering recorded events: manifests into the maildir, hooks through the runner.

A delivery (an event and a target) is pending in the index until it succeeded; only
then is it marked done, so a crash anywhere in between delivers it again after the
restart: at least once, never zero times. A manifest is written under tmp/, fsynced and
renamed into new/, so a consumer reading new/ sees whole files only. A hook gets its own
copy of the manifest (under hooks/, removed once the delivery ends), because a consumer
of new/ may take the maildir's copy away at any time.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from dcmrecvd import eventrecords, hookcommand
from dcmrecvd.events.hookrunner import STOPPED, Finished, HookRunner
from dcmrecvd.settings import EventSettings, Hook
from dcmrecvd.store import index, storage

LOG = logging.getLogger("dcmrecv.events")

PENDING = "pending"
DONE = "done"
FAILED = "failed"
DROPPED = "dropped"
# Retries of a manifest that cannot be written (a full disk) never stop; they wait this
# long at first, doubling up to MAX_BACKOFF, as hooks do.
MANIFEST_RETRY_DELAY = 5.0
MAX_BACKOFF = 3600.0
# Manifests written per call of start_due at most (the rest at the next).
MANIFEST_BATCH = 200
# What a hook's environment holds besides its event's variables.
HOOK_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Delivery:
    seq: int
    target: str
    attempts: int
    id: str
    kind: str
    study_instance_uid: str
    series_instance_uid: str
    manifest: str  # JSON

    @property
    def key(self) -> tuple[int, str]:
        return self.seq, self.target

    @property
    def fields(self) -> dict[str, str]:
        """Journal fields of every line about this delivery."""
        return {
            "EVENT_ID": self.id,
            "EVENT_KIND": self.kind,
            "STUDY_INSTANCE_UID": self.study_instance_uid,
            "SERIES_INSTANCE_UID": self.series_instance_uid,
        }


def backoff(first: float, attempts: int) -> float:
    """The wait before retry number `attempts` (1, 2, ...): first, doubled each time."""
    # The exponent is bounded first: a manifest is retried for ever.
    return float(min(first * 2.0 ** min(attempts - 1, 64), MAX_BACKOFF))


def manifest_name(delivery: Delivery) -> str:
    # The sequence first: new/ listed in name order is the order of the events.
    return f"{delivery.seq:012d}.{delivery.kind}.{delivery.id}.json"


def hook_copy_name(delivery: Delivery) -> str:
    """The name of a hook's copy of the manifest under hooks/. The sequence is the index's,
    and nodes sharing the events directory have an index each: the event's id keeps their
    copies apart."""
    hook = delivery.target.removeprefix(eventrecords.HOOK_TARGET_PREFIX)
    return f"{delivery.seq:012d}.{hook}.{delivery.id}.json"


def _write(path: Path, text: str) -> None:
    """`text` into `path` whole or not at all: a temporary name, then rename. Not
    fsynced: what it writes is written again whenever it is needed again."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="ascii") as file:
        file.write(text)
    os.replace(temporary, path)


def write_manifest(directory: Path, delivery: Delivery) -> Path:
    """The manifest into directory/new/, via tmp/, durably (maildir); its path there."""
    tmp, new = directory / "tmp", directory / "new"
    for made in (directory, tmp, new):
        made.mkdir(mode=0o750, exist_ok=True)
    name = manifest_name(delivery)
    staged = tmp / name
    with open(staged, "w", encoding="ascii") as file:
        file.write(delivery.manifest)
        file.flush()
        os.fsync(file.fileno())
    final = new / name
    os.replace(staged, final)
    storage.fsync_directory(new)
    return final


class Deliverer:
    """Starts the deliveries that are due, hooks `concurrency` at a time, and records
    how each ended. `clock` gives epoch seconds (the index's times)."""

    def __init__(
        self,
        listing: index.Index,
        settings: EventSettings,
        runner: HookRunner,
        clock: Callable[[], float],
    ) -> None:
        self.listing = listing
        self.settings = settings
        self.runner = runner
        self.clock = clock
        self._running: dict[Hashable, Delivery] = {}
        # Hooks that ended while the index could not record it.
        self._unrecorded: list[tuple[Hashable, Finished]] = []

    @property
    def directory(self) -> Path:
        return Path(self.settings.directory)

    def start_due(self) -> None:
        """Deliver the manifests that are due and start the hooks that are, as many as
        the concurrency allows."""
        now = self.clock()
        # Manifests and hooks apart: a backlog of hooks waiting for a free slot must not
        # hold up a manifest behind it.
        for delivery in self._due(now, manifests=True, limit=MANIFEST_BATCH):
            self._deliver_manifest(delivery)
        free = self.settings.hook_concurrency - len(self.runner.running)
        if free <= 0:
            return
        started = 0
        for delivery in self._due(now, manifests=False, limit=len(self._running) + free):
            if started == free:
                break
            if delivery.key not in self._running:
                started += self._start_hook(delivery)

    def _due(self, now: float, *, manifests: bool, limit: int) -> list[Delivery]:
        def select(connection: sqlite3.Connection) -> list[Delivery]:
            rows = connection.execute(
                "SELECT d.seq, d.target, d.attempts, e.id, e.kind, e.study_instance_uid,"
                " e.series_instance_uid, e.manifest FROM deliveries d JOIN events e"
                " ON d.seq = e.seq WHERE d.state = ? AND d.due <= ?"
                f" AND d.target {'=' if manifests else '!='} ?"
                " ORDER BY d.seq, d.target LIMIT ?",
                (PENDING, now, eventrecords.MANIFEST_TARGET, limit),
            ).fetchall()
            return [Delivery(*row) for row in rows]

        return self.listing.transaction(select, write=False)

    def _mark(self, delivery: Delivery, state: str, attempts: int, due: float, detail: str) -> None:
        self.listing.transaction(
            lambda connection: connection.execute(
                "UPDATE deliveries SET state = ?, attempts = ?, due = ?, detail = ?"
                " WHERE seq = ? AND target = ?",
                (state, attempts, due, detail, delivery.seq, delivery.target),
            ),
            write=True,
        )

    def _deliver_manifest(self, delivery: Delivery) -> None:
        try:
            path = write_manifest(self.directory, delivery)
        except OSError as exc:
            attempts = delivery.attempts + 1
            wait = backoff(MANIFEST_RETRY_DELAY, attempts)
            LOG.error(
                "cannot write the manifest of %s event %s into %s: %s; trying again in %.0f s",
                delivery.kind,
                delivery.id,
                self.directory,
                exc.strerror or exc,
                wait,
                extra=delivery.fields,
            )
            self._mark(delivery, PENDING, attempts, self.clock() + wait, str(exc))
            return
        self._mark(delivery, DONE, delivery.attempts + 1, self.clock(), str(path))
        LOG.debug("manifest %s written", path, extra=delivery.fields)

    @staticmethod
    def _hook_name(delivery: Delivery) -> str:
        return delivery.target.removeprefix(eventrecords.HOOK_TARGET_PREFIX)

    def _hook(self, delivery: Delivery) -> Hook | None:
        name = self._hook_name(delivery)
        return next((hook for hook in self.settings.hooks if hook.name == name), None)

    def _copy_path(self, delivery: Delivery) -> Path:
        return self.directory / "hooks" / hook_copy_name(delivery)

    def _start_hook(self, delivery: Delivery) -> bool:
        """Start the hook of `delivery`; whether it runs now."""
        hook = self._hook(delivery)
        if hook is None:
            LOG.warning(
                "%s event %s: no [hook %s] in the configuration any more; not run",
                delivery.kind,
                delivery.id,
                delivery.target.removeprefix(eventrecords.HOOK_TARGET_PREFIX),
                extra=delivery.fields,
            )
            self._mark(delivery, DROPPED, delivery.attempts, self.clock(), "hook removed")
            self._remove_copy(delivery)
            return False
        copy = self._copy_path(delivery)
        try:
            copy.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            _write(copy, delivery.manifest)
        except OSError as exc:
            self._failed(delivery, hook, f"cannot write its manifest: {exc}")
            return False
        values = eventrecords.placeholder_values(json.loads(delivery.manifest), str(copy))
        argv = hookcommand.expand(hook.command, values)
        environment = {
            "PATH": HOOK_PATH,
            "DCMRECVD_EVENT_ID": delivery.id,
            "DCMRECVD_EVENT": delivery.kind,
            "DCMRECVD_MANIFEST": str(copy),
        }
        self._running[delivery.key] = delivery
        self.runner.start(
            delivery.key,
            argv,
            env=environment,
            timeout=hook.timeout,
            fields={**delivery.fields, "HOOK": hook.name},
            name=hook.name,
        )
        return True

    def hold(self, finished: list[tuple[Hashable, Finished]]) -> None:
        """Keep how the hooks in `finished` ended, to record at the next finish() (while
        the index cannot be written)."""
        self._unrecorded += finished

    def finish(self, finished: list[tuple[Hashable, Finished]]) -> None:
        """Record how the hooks in `finished` (from the runner's poll), and any held,
        ended. Raises index.IndexFailure; what was not recorded then is held."""
        batch, self._unrecorded = [*self._unrecorded, *finished], []
        for number, (key, result) in enumerate(batch):
            try:
                self._record(key, result)
            except index.IndexFailure:
                self._unrecorded = batch[number:]
                raise

    def _record(self, key: Hashable, result: Finished) -> None:
        # Still running for start_due until recorded: it is not started again meanwhile.
        delivery = self._running[key]
        hook = self._hook(delivery)
        if result.ok:
            self._mark(delivery, DONE, delivery.attempts + 1, self.clock(), result.reason)
            self._remove_copy(delivery)
        elif hook is None:
            self._mark(delivery, DROPPED, delivery.attempts + 1, self.clock(), result.reason)
            self._remove_copy(delivery)
        else:
            self._failed(delivery, hook, result.reason)
        del self._running[key]

    def _failed(self, delivery: Delivery, hook: Hook, reason: str) -> None:
        attempts = delivery.attempts + 1
        if attempts > hook.retries:
            LOG.error(
                "hook %s failed for %s event %s after %d attempt(s), not tried again: %s",
                hook.name,
                delivery.kind,
                delivery.id,
                attempts,
                reason,
                extra={**delivery.fields, "HOOK": hook.name},
            )
            self._mark(delivery, FAILED, attempts, self.clock(), reason)
            self._remove_copy(delivery)
            return
        wait = backoff(hook.retry_delay, attempts)
        LOG.warning(
            "hook %s failed for %s event %s (%s); retry %d of %d in %.1f s",
            hook.name,
            delivery.kind,
            delivery.id,
            reason,
            attempts,
            hook.retries,
            wait,
            extra={**delivery.fields, "HOOK": hook.name},
        )
        self._mark(delivery, PENDING, attempts, self.clock() + wait, reason)

    def _remove_copy(self, delivery: Delivery) -> None:
        self._copy_path(delivery).unlink(missing_ok=True)

    def stop(self, grace: float) -> None:
        """Stop the running hooks; their deliveries stay pending, not counted as tried.
        A hook that had ended by itself meanwhile is recorded as it ended."""
        for key, result in self.runner.terminate_all(grace):
            if result.reason != STOPPED:
                self.finish([(key, result)])
                continue
            delivery = self._running.pop(key)
            LOG.info(
                "hook for %s event %s stopped (%s); it runs again at the next start",
                delivery.kind,
                delivery.id,
                result.reason,
                extra=delivery.fields,
            )
