"""Hostile bytes at a running receiver: it never crashes, leaks nothing, serves on.

Each test runs one in-process Receiver (-ta 1 / -td 1, so that whatever a hostile peer
leaves hanging ends quickly) and lets hypothesis build raw byte streams from one family
of malformations: random bytes, bad PDU headers, cut PDUs, mutated association
requests, bad PDV headers, malformed command sets, broken datasets, PDUs out of order.
Each example is sent over a fresh TCP connection, which is then closed. After every
example a well-behaved pynetdicom peer must C-ECHO and C-STORE (0x0000, file on disk),
and another one keeps storing throughout. At the end the receiver's threads and open
file descriptors are back to where they were, the spool is empty, and no file exists
under a final name but the good peers' and those of datasets that arrived whole and
well-formed (stored exactly as sent, and pydicom reads every element back).

Examples are derandomized, so CI runs the same ones every time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread

from dcmrecvd.receiver import Receiver
from dcmrecvd.settings import Settings
from tests.support import asconfigs, rawpdu
from tests.support.asconfigs import VERIFY_CT_CFG
from tests.support.net import free_port
from tests.support.peers import our_receiver
from tests.support.streaming_peer import body, final_files, temp_files, wait_until

pytestmark = pytest.mark.slow

TIMEOUT = 1
EXAMPLES = 40
# How long a hostile peer waits for the receiver to answer or hang up before it closes.
LINGER = 0.1
# Log lines that mean a handler or a reactor raised: a bug, never an answer to input.
CRASH_MARKERS = (
    "Exception in handler",
    "Exception raised in user's",
    "Exception in DUL.run",
    "event handler 'standard_pdu_recv_handler'",
)
CONTEXTS = [(1, rawpdu.VERIFICATION, (rawpdu.IMPLICIT,)), (3, rawpdu.CT, (rawpdu.EXPLICIT,))]
# Hostile instances use this root; the good peers use GOOD_ROOT.
HOSTILE_ROOT = "1.2.3.666."
GOOD_ROOT = "1.2.3.777."

# What a hostile peer sends, in order; an empty chunk means "wait for the receiver's
# next PDU" (an A-ASSOCIATE-AC, a response), so that what follows is not a race.
Chunks = list[bytes]
ANSWER = b""


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


class CrashLog(logging.Handler):
    """Collects log lines and uncaught thread exceptions that mean a crash."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.crashes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(marker in message for marker in CRASH_MARKERS):
            self.crashes.append(f"{record.name}: {message}")

    def thread_crashed(self, args: threading.ExceptHookArgs) -> None:
        name = type(args.thread).__name__
        self.crashes.append(
            f"uncaught in a {name} thread: {args.exc_type.__name__}: {args.exc_value}"
        )


@dataclass
class Run:
    """The receiver under fuzz and what the fuzz run expects of it afterwards."""

    receiver: Receiver
    port: int
    out: Path
    good: set[str] = field(default_factory=set)
    # Instance UID -> dataset bytes, for the datasets a hostile peer sent whole.
    whole: dict[str, bytes] = field(default_factory=dict)
    examples: int = 0
    counter: int = 0

    def uid(self, root: str) -> str:
        self.counter += 1
        return f"{root}{self.counter}"

    def check_good_peer(self) -> None:
        uid = self.uid(GOOD_ROOT)
        assert rawpdu.good_peer(self.port, uid) == (0x0000, 0x0000)
        assert (self.out / f"CT.{uid}").is_file()
        self.good.add(f"CT.{uid}")


class Background(threading.Thread):
    """A good peer storing over and over while the fuzz run goes on."""

    def __init__(self, run: Run) -> None:
        super().__init__(daemon=True)
        self.run_ = run
        self.stop = threading.Event()
        self.statuses: list[tuple[int, int]] = []
        self.uids: list[str] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set() and n < 10_000:
            n += 1
            uid = f"{GOOD_ROOT}bg.{n}"
            self.statuses.append(rawpdu.good_peer(self.run_.port, uid))
            self.uids.append(f"CT.{uid}")
            self.stop.wait(0.05)  # pacing, so the fuzz peers get the CPU too


def send(port: int, chunks: Chunks) -> None:
    """One hostile connection: send `chunks`, linger briefly, close."""
    peer = rawpdu.Peer(port, timeout=1.0)
    try:
        for chunk in chunks:
            if chunk == ANSWER:
                if peer.read_pdu(timeout=1.0) is None:
                    break
            elif not peer.send(chunk):
                break
        peer.closed_by_peer(LINGER)
    finally:
        peer.close()


@contextlib.contextmanager
def watching() -> Iterator[CrashLog]:
    """A CrashLog on the receiver's loggers and on uncaught thread exceptions."""
    crash_log = CrashLog()
    loggers = [logging.getLogger("pynetdicom"), logging.getLogger("dcmrecv")]
    for logger in loggers:
        logger.addHandler(crash_log)
    previous_hook = threading.excepthook
    threading.excepthook = crash_log.thread_crashed
    try:
        yield crash_log
    finally:
        threading.excepthook = previous_hook
        for logger in loggers:
            logger.removeHandler(crash_log)


@contextlib.contextmanager
def receiving(tmp_path: Path) -> Iterator[Run]:
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    config = Settings(port=port, output_dir=str(out), acse_timeout=TIMEOUT, dimse_timeout=TIMEOUT)
    with our_receiver(asconfigs.load(tmp_path, VERIFY_CT_CFG), port, config) as receiver:
        yield Run(receiver, port, out)


@contextlib.contextmanager
def fuzzing(tmp_path: Path) -> Iterator[Run]:
    """A receiver with a crash log and a background good peer; the final checks."""
    with watching() as crash_log, receiving(tmp_path) as run:
        run.check_good_peer()  # warm up: lazy imports and caches are not leaks
        threads, fds = threading.active_count(), fd_count()
        background = Background(run)
        background.start()
        try:
            yield run
        finally:
            background.stop.set()
            background.join(30)
        assert not background.is_alive()
        assert background.statuses, "the background peer never stored"
        assert set(background.statuses) == {(0x0000, 0x0000)}
        run.good.update(background.uids)
        wait_until(
            lambda: threading.active_count() <= threads,
            timeout=20,
            what=f"threads back to {threads} (now {threading.active_count()})",
        )
        wait_until(lambda: fd_count() <= fds, timeout=20, what=f"fds back to {fds}")
        wait_until(lambda: temp_files(run.out) == [], timeout=20, what="spool empty")
        stored = set(final_files(run.out))
        expected = run.good | {f"CT.{uid}" for uid in run.whole}
        assert stored <= expected, f"unexpected files: {sorted(stored - expected)}"
        for uid, data in run.whole.items():
            if f"CT.{uid}" in stored:
                assert body(run.out / f"CT.{uid}") == data
                # The validator let it through: pydicom must read every value of it.
                values = [e.value for e in dcmread(run.out / f"CT.{uid}").iterall()]
                assert values, f"CT.{uid} has no elements"
        print(
            f"{run.examples} examples, {len(background.statuses)} background stores, "
            f"{len(stored & {f'CT.{uid}' for uid in run.whole})} of "
            f"{len(run.whole)} whole hostile datasets stored"
        )
    assert sorted(set(crash_log.crashes)) == []


def fuzz(tmp_path: Path, strategy: st.SearchStrategy[Callable[[Run], Chunks]]) -> None:
    """Run EXAMPLES examples of `strategy` (each makes the chunks to send) at a receiver."""
    with fuzzing(tmp_path) as run:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(strategy)
        def example(make: Callable[[Run], Chunks]) -> None:
            send(run.port, make(run))
            run.examples += 1
            run.check_good_peer()

        example()


# Building blocks -------------------------------------------------------------------


def associated(*after: bytes) -> Chunks:
    return [rawpdu.associate_rq(CONTEXTS), *after]


def pdu_header(kind: int, length: int) -> bytes:
    return struct.pack(">BBL", kind, 0, length)


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (position, operation, byte) edits: 0 replace, 1 insert, 2 delete."""
    out = bytearray(data)
    for position, operation, value in edits:
        if not out:
            break
        i = position % len(out)
        if operation == 0:
            out[i] = value
        elif operation == 1:
            out.insert(i, value)
        else:
            del out[i]
    return bytes(out)


edits = st.lists(
    st.tuples(st.integers(0, 1 << 16), st.integers(0, 2), st.integers(0, 255)),
    min_size=1,
    max_size=8,
)
pdu_types = st.integers(0, 255)
lengths = st.one_of(
    st.integers(0, 600),
    st.integers(1024 * 1024 - 8, 1024 * 1024 + 8),  # around the receiver's limit
    st.integers(1 << 24, (1 << 32) - 1),  # far above it
)
garbage = st.binary(max_size=600)


def const(chunks: Chunks) -> Callable[[Run], Chunks]:
    return lambda _run: chunks


# The families ------------------------------------------------------------------------


def random_bytes() -> st.SearchStrategy[Callable[[Run], Chunks]]:
    return st.binary(min_size=1, max_size=2048).map(lambda data: const([data]))


def request_then_garbage() -> st.SearchStrategy[Callable[[Run], Chunks]]:
    return garbage.map(lambda data: const(associated(data)))


def bad_pdu_headers() -> st.SearchStrategy[Callable[[Run], Chunks]]:
    def make(first: bool, kind: int, length: int, data: bytes) -> Callable[[Run], Chunks]:
        chunk = pdu_header(kind, length) + data
        return const([chunk] if first else associated(chunk))

    return st.builds(make, st.booleans(), pdu_types, lengths, garbage)


def truncated_pdus() -> st.SearchStrategy[Callable[[Run], Chunks]]:
    def make(which: int, cut: int) -> Callable[[Run], Chunks]:
        def chunks(run: Run) -> Chunks:
            store = rawpdu.command_set(rawpdu.C_STORE_RQ, sop_instance=run.uid(HOSTILE_ROOT))
            whole = [
                rawpdu.associate_rq(CONTEXTS),
                rawpdu.p_data(rawpdu.pdv(3, rawpdu.COMMAND | rawpdu.LAST, store)),
                rawpdu.release_rq(),
                rawpdu.p_data(rawpdu.pdv(3, 0, rawpdu.explicit_dataset("1.2.3", b"x" * 300))),
            ][which]
            cut_at = cut % len(whole)
            return [whole[:cut_at]] if which == 0 else associated(whole[:cut_at])

        return chunks

    return st.builds(make, st.integers(0, 3), st.integers(0, 1 << 16))


def mutated_requests() -> st.SearchStrategy[Callable[[Run], Chunks]]:
    def make(changes: list[tuple[int, int, int]], echo: bool) -> Callable[[Run], Chunks]:
        rq = mutate(rawpdu.associate_rq(CONTEXTS), changes)
        command = rawpdu.command_set(rawpdu.C_ECHO_RQ, sop_class=rawpdu.VERIFICATION, dataset=False)
        then = [rawpdu.p_data(rawpdu.pdv(1, rawpdu.COMMAND | rawpdu.LAST, command))]
        return const([rq, *then] if echo else [rq])

    return st.builds(make, edits, st.booleans())


def bad_pdvs() -> st.SearchStrategy[Callable[[Run], Chunks]]:
    pdv = st.tuples(
        st.one_of(st.none(), st.integers(0, (1 << 32) - 1)),  # declared length, None = true
        st.integers(0, 255),  # context id
        st.integers(0, 255),  # message control header
        st.binary(max_size=200),
    )

    def make(values: list[tuple[int | None, int, int, bytes]]) -> Callable[[Run], Chunks]:
        items = b"".join(
            struct.pack(">LBB", len(data) + 2 if length is None else length, cx, control) + data
            for length, cx, control, data in values
        )
        return const(associated(rawpdu.pdu(rawpdu.P_DATA_TF, items)))

    return st.builds(make, st.lists(pdv, min_size=1, max_size=5))


def malformed_commands() -> st.SearchStrategy[Callable[[Run], Chunks]]:
    def make(
        changes: list[tuple[int, int, int]], with_data: bool, cx: int
    ) -> Callable[[Run], Chunks]:
        def chunks(run: Run) -> Chunks:
            command = rawpdu.command_set(rawpdu.C_STORE_RQ, sop_instance=run.uid(HOSTILE_ROOT))
            values = [rawpdu.pdv(cx, rawpdu.COMMAND | rawpdu.LAST, mutate(command, changes))]
            if with_data:
                # A dataset fragment that never ends: a malformed command stores nothing.
                values.append(rawpdu.pdv(cx, 0, rawpdu.explicit_dataset("1.2.3")))
            return associated(rawpdu.p_data(*values))

        return chunks

    return st.builds(make, edits, st.booleans(), st.sampled_from([1, 3]))


def broken_datasets() -> st.SearchStrategy[Callable[[Run], Chunks]]:
    def make(
        changes: list[tuple[int, int, int]], fragment: int, cx: int, end: bool
    ) -> Callable[[Run], Chunks]:
        def chunks(run: Run) -> Chunks:
            uid = run.uid(HOSTILE_ROOT)
            command = rawpdu.command_set(rawpdu.C_STORE_RQ, sop_instance=uid)
            data = mutate(rawpdu.explicit_dataset(uid, b"\x05" * 500), changes)
            pdus = rawpdu.dataset_pdus(cx, data, fragment)
            command_pdu = rawpdu.p_data(rawpdu.pdv(cx, rawpdu.COMMAND | rawpdu.LAST, command))
            if not end:
                # Stops before the last fragment: nothing may be stored.
                unfinished = pdus[:-1] or [rawpdu.p_data(rawpdu.pdv(cx, 0, data[:1]))]
                return associated(ANSWER, command_pdu, *unfinished)
            run.whole[uid] = data
            return associated(ANSWER, command_pdu, *pdus, ANSWER, rawpdu.release_rq())

        return chunks

    return st.builds(make, edits, st.integers(1, 700), st.sampled_from([1, 3]), st.booleans())


def out_of_order() -> st.SearchStrategy[Callable[[Run], Chunks]]:
    echo = rawpdu.command_set(rawpdu.C_ECHO_RQ, sop_class=rawpdu.VERIFICATION, dataset=False)
    pieces = st.sampled_from(
        [
            rawpdu.associate_rq(CONTEXTS),
            rawpdu.pdu(rawpdu.ASSOCIATE_AC, b"\0" * 68),
            rawpdu.pdu(rawpdu.ASSOCIATE_RJ, b"\0\x01\x01\x01"),
            rawpdu.p_data(rawpdu.pdv(1, rawpdu.COMMAND | rawpdu.LAST, echo)),
            rawpdu.p_data(rawpdu.pdv(3, rawpdu.LAST, rawpdu.explicit_dataset("1.2.3"))),
            rawpdu.release_rq(),
            rawpdu.pdu(rawpdu.RELEASE_RP, b"\0" * 4),
            rawpdu.pdu(rawpdu.ABORT, b"\0\0\0\0"),
        ]
    )
    return st.lists(pieces, min_size=1, max_size=6).map(const)


FAMILIES = {
    "random-bytes": random_bytes,
    "request-then-garbage": request_then_garbage,
    "bad-pdu-headers": bad_pdu_headers,
    "truncated-pdus": truncated_pdus,
    "mutated-requests": mutated_requests,
    "bad-pdvs": bad_pdvs,
    "malformed-commands": malformed_commands,
    "broken-datasets": broken_datasets,
    "out-of-order": out_of_order,
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hostile_bytes(tmp_path: Path, family: str) -> None:
    fuzz(tmp_path, FAMILIES[family]())


def test_a_pdu_far_over_the_limit_is_cut_before_its_body_arrives(tmp_path: Path) -> None:
    # The receiver must refuse it from the header alone: the body is never sent, and
    # the connection stays open on this side, so only the receiver can end it.
    with fuzzing(tmp_path) as run:
        for length in (1024 * 1024 + 1, 1 << 30, (1 << 32) - 1):
            peer = rawpdu.Peer(run.port)
            try:
                assert peer.associate(rawpdu.associate_rq(CONTEXTS))
                assert peer.send(pdu_header(rawpdu.P_DATA_TF, length))
                started = time.monotonic()
                assert peer.closed_by_peer(5 * TIMEOUT)
                # Well before the network timeout: refused, not timed out.
                assert time.monotonic() - started < TIMEOUT
            finally:
                peer.close()
            run.check_good_peer()


# Known bugs ---------------------------------------------------------------------------


@contextlib.contextmanager
def watched_receiver(tmp_path: Path) -> Iterator[tuple[Run, CrashLog]]:
    """A receiver and a crash log, for one bug found here; every association ends first."""
    with watching() as crash_log, receiving(tmp_path) as run:
        yield run, crash_log
        wait_until(lambda: not run.receiver.ae.active_associations, what="associations ended")


def test_a_bad_pdu_right_after_the_request_kills_no_thread(tmp_path: Path) -> None:
    with watched_receiver(tmp_path) as (run, crash_log):
        # A race between the association thread's answer and the DUL's abort, lost
        # most of the time on this machine; ten tries make it near certain.
        for _ in range(10):
            send(run.port, [rawpdu.associate_rq(CONTEXTS) + pdu_header(0x00, 0)])
    assert crash_log.crashes == []


UNDECODABLE_COMMAND = rawpdu.p_data(rawpdu.pdv(3, rawpdu.COMMAND | rawpdu.LAST, b"\xff" * 10))


def test_an_undecodable_command_set_kills_no_thread(tmp_path: Path) -> None:
    with watched_receiver(tmp_path) as (run, crash_log):
        peer = rawpdu.Peer(run.port)
        try:
            assert peer.associate(rawpdu.associate_rq(CONTEXTS))
            assert peer.send(UNDECODABLE_COMMAND)
            assert peer.closed_by_peer(5 * TIMEOUT)
        finally:
            peer.close()
        run.check_good_peer()
    assert crash_log.crashes == []


def test_an_undecodable_command_mid_dataset_leaves_no_temp_file(tmp_path: Path) -> None:
    with watched_receiver(tmp_path) as (run, _crash_log):
        fds = fd_count()
        uid = run.uid(HOSTILE_ROOT)
        command = rawpdu.command_set(rawpdu.C_STORE_RQ, sop_instance=uid)
        pdus = rawpdu.dataset_pdus(3, rawpdu.explicit_dataset(uid, b"\x07" * 200 * 1024))
        peer = rawpdu.Peer(run.port)
        try:
            assert peer.associate(rawpdu.associate_rq(CONTEXTS))
            assert peer.send(rawpdu.p_data(rawpdu.pdv(3, rawpdu.COMMAND | rawpdu.LAST, command)))
            assert peer.send(b"".join(pdus[:6]))
            wait_until(lambda: temp_files(run.out) != [], what="temp file of the dataset")
            assert peer.send(UNDECODABLE_COMMAND)
            assert peer.closed_by_peer(5 * TIMEOUT)
        finally:
            peer.close()
        run.check_good_peer()
        wait_until(lambda: temp_files(run.out) == [], timeout=5, what="temp file removed")
        wait_until(lambda: fd_count() <= fds, timeout=5, what=f"fds back to {fds}")


def test_a_requestor_sending_an_accept_logs_no_traceback(tmp_path: Path) -> None:
    with watched_receiver(tmp_path) as (run, crash_log):
        peer = rawpdu.Peer(run.port)
        try:
            assert peer.send(rawpdu.pdu(rawpdu.ASSOCIATE_AC, b"\0" * 68))
            assert peer.closed_by_peer(5 * TIMEOUT)
        finally:
            peer.close()
    assert crash_log.crashes == []
