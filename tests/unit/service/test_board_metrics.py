"""The metrics the board keeps: per worker, over forks, kept when a worker is reaped."""

from __future__ import annotations

import os

from dcmrecvd.metrics import snapshot
from dcmrecvd.service.board import MAX_LIVE, Board, SharedStats
from dcmrecvd.stats import Identity


def worker(board: Board, pid: int) -> int:
    slot = board.claim()
    board.assign(slot, pid)
    board.slot = slot  # as in the worker forked into it
    return slot


def who(peer: str = "ct", number: int = 1) -> Identity:
    return Identity(f"{os.getpid()}.{number}", "CT1", "DCMRECVD", "192.0.2.1", peer, False)


def test_counts_by_peer_and_status_survive_the_workers_reaping() -> None:
    board = Board()
    first = worker(board, 4242)
    stats = SharedStats(board)
    stats.association()
    stats.response("ct", 0x0000, 1000)
    stats.response("ct", 0x0000, 500)
    stats.response("ct", 0xA700, None)
    stats.response(snapshot.OTHER_PEER, 0xC000, None)
    stats.rejected("calling-aetitle")
    stats.tls_failure()
    board.release(first)
    worker(board, 4243)
    second = SharedStats(board)  # a new worker process's own
    second.response("ct", 0x0111, None)
    second.response("mr", 0xB000, 10)
    found = board.metrics()
    assert found.associations_accepted == 1
    assert found.associations_rejected["calling-aetitle"] == 1
    assert sum(found.associations_rejected.values()) == 1
    assert found.responses[("ct", "success")] == 2
    assert found.responses[("ct", "out-of-resources")] == 1
    assert found.responses[("ct", "duplicate")] == 1
    assert found.responses[("other", "cannot-understand")] == 1
    assert found.responses[("mr", "warning")] == 1
    assert found.instances == {"other": 0, "ct": 2, "mr": 1}
    assert found.bytes == {"other": 0, "ct": 1500, "mr": 10}
    assert found.tls_handshake_failures == 1


def test_timings_fill_the_histograms() -> None:
    board = Board()
    worker(board, 4242)
    stats = SharedStats(board)
    stats.timings(0.004, 0.002)
    stats.timings(0.2, 0.15)
    stats.timings(99.0, 0.0005)
    found = board.metrics()
    commit = found.commit_seconds
    assert commit.count == 3 and abs(commit.total - 99.204) < 1e-9
    assert commit.counts[snapshot.bucket(0.004)] == 1
    assert commit.counts[snapshot.bucket(0.2)] == 1
    assert commit.counts[-1] == 1  # beyond the last bound: +Inf
    assert found.fsync_seconds.counts[0] == 1  # 0.0005 <= 0.001
    assert found.fsync_seconds.count == 3


def test_the_parents_counts() -> None:
    board = Board()
    board.worker_started()
    board.worker_started()
    board.worker_died()
    board.reloaded(success=True)
    board.reloaded(success=False)
    board.configured("ab" * 32)
    found = board.metrics()
    assert (found.worker_starts, found.worker_deaths) == (2, 1)
    assert found.reloads == {"success": 1, "refused": 1}
    assert found.last_reload_success > 0
    assert found.config_sha256 == "ab" * 32


def test_live_associations_show_their_progress_and_go_with_their_worker() -> None:
    board = Board()
    slot = worker(board, os.getpid())
    stats = SharedStats(board)
    live = stats.live(who("ct", 1))
    live.begin("1.2.3.4")
    live.progress(65536)
    (entry,) = board.metrics().live
    assert entry.id == f"{os.getpid()}.1" and entry.peer == "ct"
    assert (entry.calling_aetitle, entry.called_aetitle) == ("CT1", "DCMRECVD")
    assert entry.current_sop_instance_uid == "1.2.3.4" and entry.current_bytes == 65536
    live.end(70000)
    (entry,) = board.metrics().live
    assert (entry.instances, entry.bytes, entry.current_bytes) == (1, 70000, 0)
    assert entry.current_sop_instance_uid == ""
    live.close()
    assert board.metrics().live == ()
    stats.live(who("ct", 2))
    board.release(slot)  # killed with an association running: its entry goes too
    assert board.metrics().live == ()


def test_a_full_live_table_leaves_the_association_uncounted_there() -> None:
    board = Board()
    worker(board, os.getpid())
    stats = SharedStats(board)
    entries = [stats.live(who(number=n)) for n in range(MAX_LIVE + 1)]
    assert len(board.metrics().live) == MAX_LIVE
    entries[-1].progress(5)  # a no-op entry, never an error
    entries[0].close()
    assert len(board.metrics().live) == MAX_LIVE - 1


def test_peer_labels_beyond_the_table_count_as_other() -> None:
    board = Board()
    worker(board, 4242)
    stats = SharedStats(board)
    for number in range(100):
        stats.response(f"peer{number}", 0, 1)
    found = board.metrics()
    assert sum(found.instances.values()) == 100
    assert found.instances["other"] == 100 - 63  # 63 names after "other"
    assert "peer62" in found.instances and "peer63" not in found.instances


def test_workers_are_listed_with_their_counts() -> None:
    board = Board()
    worker(board, 4242)
    board.count(associations=2, instances=3, size=30)
    board.beat(1, accepting=True)
    (row,) = board.metrics().workers
    assert (row.pid, row.active, row.associations, row.instances, row.bytes) == (
        4242,
        1,
        2,
        3,
        30,
    )
    assert 0 <= row.beat_age < 60


def test_commitment_counts_from_any_process_and_its_pending_gauge() -> None:
    board = Board()
    assert board.metrics().commitment_pending is None  # no commitment process yet
    slot = worker(board, 4242)
    SharedStats(board).commitment("requests")
    board.release(slot)  # a worker's commitment counts outlive it
    pid = os.fork()
    if pid == 0:  # the commitment process: no slot of its own
        SharedStats(board).commitment("instances_stored", 12)
        board.commitment_pending(3)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    found = board.metrics()
    assert found.commitment["requests"] == 1
    assert found.commitment["instances_stored"] == 12
    assert set(found.commitment) == set(snapshot.COMMITMENT_COUNTERS)
    assert found.commitment_pending == 3
