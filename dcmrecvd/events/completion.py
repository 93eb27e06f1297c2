"""Series and study completion: which open ones are due, and the pass that completes them.

Workers only open series and studies (index.touch, in the transaction that lists an
object). Completing them is done here, in the events process alone, in one write
transaction per pass: the state change and the event it makes are committed together,
so an event is never lost and never made twice. Times are epoch seconds as the workers
recorded them (they survive a restart, which a monotonic clock would not); the pass
takes `now` from its caller, so tests drive it with their own clock.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from dcmrecvd import eventrecords
from dcmrecvd.config.access import AccessPolicy
from dcmrecvd.settings import CompletionRule, EventKind, EventSettings
from dcmrecvd.store import index

LOG = logging.getLogger("dcmrecv.events")

QUIET = "quiet"
MAX_AGE = "max-age"
RULE = "rule"


@dataclass(frozen=True)
class OpenState:
    """A series or study that is receiving."""

    uid: str
    generation: int
    first_received: float  # of this generation
    last_received: float


def due(state: OpenState, now: float, quiet: float, max_age: float | None) -> str | None:
    """Why `state` completes at `now` (QUIET or MAX_AGE), or None while it stays open."""
    if now - state.last_received >= quiet:
        return QUIET
    if max_age is not None and now - state.first_received >= max_age:
        return MAX_AGE
    return None


def satisfied(rule: CompletionRule, series_count: int, modalities: frozenset[str]) -> bool:
    """Whether a study whose series are all complete meets `rule` (both parts if both set)."""
    if rule.empty:
        return False
    enough = rule.expected_series is None or series_count >= rule.expected_series
    present = set(rule.required_modalities) <= modalities
    return enough and present


def rule_for(
    settings: EventSettings, access: AccessPolicy, calling: str, address: str
) -> CompletionRule:
    """The rule of a study whose first instance came from `calling` at `address`: its
    [peer]'s own, else that peer's profile's, else the receiver's."""
    peer = next((rule for rule in access.rules if rule.matches(calling, address)), None)
    if peer is not None:
        own = dict(settings.peer_rules).get(peer.name)
        if own is not None:
            return own
        if peer.profile is not None:
            by_profile = dict(settings.profile_rules).get(peer.profile)
            if by_profile is not None:
                return by_profile
    return settings.rule


@dataclass(frozen=True)
class Completed:
    """One completion a pass made; seq is its event's, None when nothing is delivered."""

    kind: EventKind
    study_instance_uid: str
    series_instance_uid: str
    generation: int
    reason: str
    instances: int
    seq: int | None


def _entries(connection: sqlite3.Connection, column: str, uid: str) -> list[index.Entry]:
    rows = connection.execute(
        f"SELECT {index.ENTRY_COLUMNS} FROM objects WHERE {column} = ? ORDER BY received_at, path",
        (uid,),
    ).fetchall()
    return [index.Entry(*row) for row in rows]


class Pass:
    """One completion pass over the index, inside one write transaction."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        settings: EventSettings,
        access: AccessPolicy,
        now: float,
        new_id: Callable[[], str],
    ) -> None:
        self.connection = connection
        self.settings = settings
        self.access = access
        self.now = now
        self.new_id = new_id
        self.completed: list[Completed] = []

    def run(self) -> list[Completed]:
        for row in self.connection.execute(
            "SELECT series_instance_uid, study_instance_uid, generation, first_received,"
            " last_received FROM series WHERE open = 1 ORDER BY first_received"
        ).fetchall():
            state = OpenState(row[0], row[2], row[3], row[4])
            reason = due(state, self.now, self.settings.series_quiet, self.settings.max_age)
            if reason is not None:
                self._series(state, row[1], reason)
        for row in self.connection.execute(
            "SELECT study_instance_uid, generation, first_received, last_received"
            " FROM studies WHERE open = 1 ORDER BY first_received"
        ).fetchall():
            self._study(OpenState(*row))
        return self.completed

    def _series(self, state: OpenState, study: str, reason: str) -> None:
        self.connection.execute(
            "UPDATE series SET open = 0 WHERE series_instance_uid = ?", (state.uid,)
        )
        files = _entries(self.connection, "series_instance_uid", state.uid)
        self._complete(EventKind.SERIES_COMPLETE, study, state, reason, files)

    def _study(self, state: OpenState) -> None:
        open_series = self.connection.execute(
            "SELECT series_instance_uid, generation, first_received, last_received"
            " FROM series WHERE study_instance_uid = ? AND open = 1",
            (state.uid,),
        ).fetchall()
        # Its quiet period is at least its series' (the configuration checks it), so a
        # quiet study's series are complete by the time it is; a rule waits for them too.
        reason = RULE if not open_series and self._rule_met(state.uid) else None
        reason = reason or due(state, self.now, self.settings.study_quiet, self.settings.max_age)
        if reason is None:
            return
        # A study completing by its maximum age takes its open series with it, so that
        # each series' event still comes before its study's.
        for row in open_series:
            self._series(OpenState(*row), state.uid, reason)
        self.connection.execute(
            "UPDATE studies SET open = 0 WHERE study_instance_uid = ?", (state.uid,)
        )
        files = _entries(self.connection, "study_instance_uid", state.uid)
        self._complete(EventKind.STUDY_COMPLETE, state.uid, state, reason, files)

    def _rule_met(self, study: str) -> bool:
        """Whether the rule of `study`, whose series are all complete, completes it now.
        Its queries run only when the configuration has a rule at all: a pass runs every
        tick, holding the index's write lock."""
        settings = self.settings
        if settings.rule.empty and not settings.peer_rules and not settings.profile_rules:
            return False
        first = self.connection.execute(
            "SELECT calling_ae, peer_address FROM objects WHERE study_instance_uid = ?"
            " ORDER BY received_at LIMIT 1",
            (study,),
        ).fetchone()
        rule = rule_for(settings, self.access, *(first or ("", "")))
        if rule.empty:
            return False
        (series_count,) = self.connection.execute(
            "SELECT count(*) FROM series WHERE study_instance_uid = ?", (study,)
        ).fetchone()
        modalities = frozenset(
            row[0]
            for row in self.connection.execute(
                "SELECT DISTINCT modality FROM objects WHERE study_instance_uid = ?", (study,)
            )
            if row[0]
        )
        return satisfied(rule, series_count, modalities)

    def _complete(
        self,
        kind: EventKind,
        study: str,
        state: OpenState,
        reason: str,
        files: list[index.Entry],
    ) -> None:
        series = state.uid if kind is EventKind.SERIES_COMPLETE else ""
        targets = eventrecords.targets(self.settings, kind, (f.modality for f in files))
        seq = None
        if targets:
            occurrence = eventrecords.Occurrence(
                kind=kind,
                id=self.new_id(),
                created_at=self.now,
                study_instance_uid=study,
                series_instance_uid=series,
                generation=state.generation,
                reason=reason,
            )
            seq = index.insert_event(self.connection, index.new_event(occurrence, files, targets))
        self.completed.append(
            Completed(kind, study, series, state.generation, reason, len(files), seq)
        )


def run_pass(
    listing: index.Index,
    settings: EventSettings,
    access: AccessPolicy,
    now: float,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> list[Completed]:
    """Complete what is due at `now`; what was completed, in the order of its events.
    Raises index.IndexFailure."""
    completed = listing.transaction(
        lambda connection: Pass(connection, settings, access, now, new_id).run(), write=True
    )
    for done in completed:
        what = (
            f"series {done.series_instance_uid} of study {done.study_instance_uid}"
            if done.kind is EventKind.SERIES_COMPLETE
            else f"study {done.study_instance_uid}"
        )
        LOG.info(
            "%s complete: generation %d, %d instance(s), %s",
            what,
            done.generation,
            done.instances,
            done.reason,
            extra={
                "EVENT_KIND": done.kind.value,
                "STUDY_INSTANCE_UID": done.study_instance_uid,
                "SERIES_INSTANCE_UID": done.series_instance_uid,
                "GENERATION": str(done.generation),
                "COMPLETION_REASON": done.reason,
            },
        )
    return completed


# Finished events are kept this long (for an administrator to look at), then removed.
EVENT_RETENTION = 7 * 86400.0


def prune(listing: index.Index, now: float) -> int:
    """Remove the events older than EVENT_RETENTION with no delivery pending; how many."""

    def delete(connection: sqlite3.Connection) -> int:
        old = [
            seq
            for (seq,) in connection.execute(
                "SELECT seq FROM events WHERE created_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM deliveries WHERE deliveries.seq = events.seq"
                " AND state = 'pending')",
                (now - EVENT_RETENTION,),
            )
        ]
        connection.executemany("DELETE FROM deliveries WHERE seq = ?", [(s,) for s in old])
        connection.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s in old])
        return len(old)

    return listing.transaction(delete, write=True)
