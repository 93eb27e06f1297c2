"""The board the daemon's processes share: counts that outlive a worker."""

from __future__ import annotations

from dcmrecvd.service.board import Board
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
