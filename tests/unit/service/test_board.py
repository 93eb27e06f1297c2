"""The board the daemon's processes share: counts that outlive a worker."""

from __future__ import annotations

import time

import pytest

from dcmrecvd.config.access import AccessPolicy, PeerRule
from dcmrecvd.service import board as board_module
from dcmrecvd.service.board import Board, SharedAdmission
from dcmrecvd.stats import Totals


def test_the_board_keeps_a_reaped_workers_counts() -> None:
    board = Board()
    first = board.claim()
    board.assign(first, 4242)
    board.slot = first  # as in the worker forked into it
    board.count(associations=1)
    board.count(instances=2, size=300)
    assert board.snapshot().totals == Totals(1, 2, 300)
    board.release(first)  # reaped
    assert board.snapshot().totals == Totals(1, 2, 300)
    second = board.claim()  # the slot taken again, by a new worker
    board.assign(second, 4243)
    board.slot = second
    board.count(instances=1, size=5)
    assert board.snapshot().totals == Totals(1, 3, 305)


def _with_nul_in_digest() -> str:
    """A rule name whose digest has a NUL byte early (a c_char field cut it there)."""
    return next(
        name
        for name in (f"peer-{n}" for n in range(100_000))
        if 0 in board_module._digest(name)[:8]
    )


def test_a_rule_whose_digest_holds_a_nul_is_counted_and_released(
    caplog: pytest.LogCaptureFixture,
) -> None:
    board = Board()
    slot = board.claim()
    board.assign(slot, 4242)
    board.slot = slot
    admission = SharedAdmission(board)
    rule = PeerRule(_with_nul_in_digest(), max_associations=1)
    policy = AccessPolicy(rules=(rule,))
    first = admission.admit(policy, 10, ("CT01", "DCMRECVD", "10.1.1.1"))
    assert first.accepted and first.rule == rule
    # The rule's one place is taken: its limit holds.
    assert not admission.admit(policy, 10, ("CT01", "DCMRECVD", "10.1.1.1")).accepted
    admission.leave(first)
    assert admission.admit(policy, 10, ("CT01", "DCMRECVD", "10.1.1.1")).accepted
    assert "too many access rules" not in caplog.text


def test_a_worker_that_starts_accepting_has_beaten() -> None:
    board = Board()
    slot = board.claim()
    board.assign(slot, 4242)
    board.slot = slot
    assert board.beat_of(slot) == 0.0
    before = time.monotonic()
    board.set_accepting(True)
    assert before <= board.beat_of(slot) <= time.monotonic()
    beat = board.beat_of(slot)
    board.set_accepting(False)  # stopping to accept is no sign of health
    assert board.beat_of(slot) == beat
