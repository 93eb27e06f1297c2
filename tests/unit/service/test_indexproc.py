"""A failing index as the events and commitment processes meet it: said once a minute,
tried again less and less often, its recovery said once."""

from __future__ import annotations

import logging

import pytest

from dcmrecvd.service.indexproc import INDEX_RETRY_MAX, IndexTrouble
from dcmrecvd.store import index


def test_a_failing_index_is_said_once_a_minute_and_tried_less_often(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trouble = IndexTrouble("events")
    failure = index.IndexFailure("database or disk is full")
    with caplog.at_level(logging.INFO, logger="dcmrecv"):
        waits = [trouble.failed(failure, float(now), 0.5) for now in range(0, 200, 10)]
        trouble.worked()
        trouble.worked()
    assert waits[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, INDEX_RETRY_MAX]
    assert set(waits[6:]) == {INDEX_RETRY_MAX}
    assert caplog.messages == [
        "events: database or disk is full; trying again",  # at 0
        "events: database or disk is full; trying again",  # at 60
        "events: database or disk is full; trying again",  # at 120
        "events: database or disk is full; trying again",  # at 180
        "events: the index works again",
    ]
    # Worked: the next failure starts from the shortest wait and is said at once.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dcmrecv"):
        assert trouble.failed(failure, 190.0, 0.5) == 0.5
    assert caplog.messages == ["events: database or disk is full; trying again"]
