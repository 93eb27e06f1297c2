"""What dcmrecvd.pnd relies on in pynetdicom beyond its documented API, in one place.

Upgrading pynetdicom is: widen SUPPORTED in pyproject.toml, run this file, and read
dcmrecvd/pnd/ for each name that fails. The lists below are the contract; the last test
keeps them complete (a new private name used in pnd/ must be listed here).
"""

from __future__ import annotations

import ast
import inspect
import socket
import tomllib
from collections.abc import Iterator
from typing import Any, cast

import pynetdicom
import pytest
from packaging.requirements import Requirement
from pydicom.uid import UID
from pynetdicom import AE, fsm
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor
from pynetdicom.transport import AssociationSocket, ThreadedAssociationServer

from dcmrecvd.pnd import (
    dispatch,
    fastpath,
    pdulimit,
    quietlog,
    reactor,
    responses,
    server,
    streaming,
)
from tests.support.paths import REPO

PND = REPO / "dcmrecvd" / "pnd"

# Attributes of pynetdicom's objects that pnd/ reads, replaces or overrides, by owner.
ASSOCIATION = (
    "_dul_ready",  # reactor: set once the blocking DUL runs
    "_is_paused",  # reactor: the association loop's own pause flag
    "_kill",  # reactor: ends the association loop
    "_reactor_checkpoint",  # reactor: waited on as pynetdicom's loop does
    "_run_reactor",  # reactor: replaced by a loop that blocks instead of polling
    "_sent_abort",  # association.aborted_by_us: set by Association.abort
    "_serve_request",  # dispatch: replaced per association (storage-only refusals)
    "abort",
    "accepted_contexts",
    "acceptor",
    "acse",
    "dimse",
    "dimse_timeout",  # dispatch: bounds the wait for a report's answer on the association
    "dul",
    "get_handlers",
    "is_aborted",
    "is_established",
    "is_released",
    "kill",
    "network_timeout_response",
    "release",
    "requestor",
    "send_n_event_report",  # dispatch: a report on the N-ACTION's association
    "unbind",
)
DUL = (
    "_decode_pdu",  # reactor: decodes what the blocking read took off the socket
    "_idle_timer",  # reactor: restarted on traffic
    "_kill_thread",  # reactor: ends the DUL thread
    "_process_recv_primitive",  # reactor: the association's primitives, one per turn
    "_read_pdu_data",  # reactor: overridden by a read that blocks
    "_recv_pdu",  # reactor: the queue the state machine takes PDUs from
    "artim_timer",
    "event_queue",  # reactor, streaming: state-machine events injected from outside
    "idle_timer_expired",
    "is_alive",
    "kill_dul",
    "receive_pdu",
    "run",
    "run_reactor",
    "send_pdu",
    "socket",
    "state_machine",
    "stop_dul",
    "to_provider_queue",  # reactor: replaced by a queue that signals the reactor
    "to_user_queue",  # reactor: replaced likewise
)
DIMSE = ("assoc", "dul", "maximum_pdu_size", "message", "receive_primitive", "send_msg")
SOCKET = ("recv", "socket")
SERVER = (
    "get_request",
    "process_request",
    "process_request_thread",
    "server_activate",
    "server_bind",
    "server_close",
    "service_actions",
    "shutdown",
)
# The private module-level names pnd/ imports.
MODULE_NAMES = (
    ("pynetdicom._handlers", "standard_dimse_recv_handler"),
    ("pynetdicom._handlers", "standard_dimse_sent_handler"),
    ("pynetdicom._handlers", "standard_pdu_recv_handler"),
    ("pynetdicom._handlers", "standard_pdu_sent_handler"),
    ("pynetdicom.fsm", "TRANSITION_TABLE"),
)
# State-machine entries reactor.py relies on: (event, state) -> action; None: no entry.
TRANSITIONS = {
    ("Evt10", "Sta6"): "DT-2",  # a P-DATA-TF in Sta6: done in place by the reactor
    ("Evt17", "Sta6"): "AA-4",  # the peer closed the connection
    ("Evt19", "Sta6"): "AA-8",  # an invalid PDU
    ("Evt18", "Sta2"): "AA-2",  # ARTIM expiry is an event in Sta2 and Sta13 only
    ("Evt18", "Sta13"): "AA-2",
    ("Evt17", "Sta13"): "AR-5",
    ("Evt7", "Sta13"): None,  # an A-ASSOCIATE-AC after our abort: dropped by _late
}
# Our subclasses swapped onto live objects with __class__, and the class they replace.
SWAPPED = {
    reactor.BlockingAssociation: Association,
    reactor.BlockingDUL: DULServiceProvider,
    streaming.StreamingDIMSE: DIMSEServiceProvider,
    dispatch.StorageOnlyDIMSE: DIMSEServiceProvider,
    responses.QuickResponseDIMSE: DIMSEServiceProvider,
    fastpath.FastStoreDIMSE: DIMSEServiceProvider,
    pdulimit.LimitedSocket: AssociationSocket,
}


@pytest.fixture
def assoc() -> Iterator[Association]:
    ae = AE()
    ae.add_supported_context("1.2.840.10008.1.1")
    yield Association(ae, "acceptor")
    ae.shutdown()


def test_the_installed_pynetdicom_is_in_the_supported_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    [supported] = [
        Requirement(text) for text in project["dependencies"] if text.startswith("pynetdicom")
    ]
    assert supported.specifier.contains(pynetdicom.__version__), (
        f"pynetdicom {pynetdicom.__version__} is outside {supported.specifier}: "
        "check this file's contract before widening the range"
    )


@pytest.mark.parametrize(
    ("owner", "names"),
    [("association", ASSOCIATION), ("dul", DUL), ("dimse", DIMSE), ("socket", SOCKET)],
)
def test_every_attribute_pnd_relies_on_exists(
    assoc: Association, owner: str, names: tuple[str, ...]
) -> None:
    with socket.socket() as raw:
        objects: dict[str, Any] = {
            "association": assoc,
            "dul": assoc.dul,
            "dimse": assoc.dimse,
            "socket": AssociationSocket(assoc, client_socket=raw),
        }
        missing = [name for name in names if not hasattr(objects[owner], name)]
    assert missing == []


def test_every_server_method_pnd_overrides_exists() -> None:
    assert [name for name in SERVER if not hasattr(ThreadedAssociationServer, name)] == []


def test_every_private_module_name_exists() -> None:
    missing = []
    for module, name in MODULE_NAMES:
        try:
            getattr(__import__(module, fromlist=[name]), name)
        except (ImportError, AttributeError):
            missing.append(f"{module}.{name}")
    assert missing == []


def test_the_standard_dump_handlers_are_bound_by_default(assoc: Association) -> None:
    # quietlog unbinds them; pynetdicom binds them while LOG_HANDLER_LEVEL is "standard".
    for event, handler in quietlog._DUMPS:
        bound = cast(list[tuple[Any, Any]], assoc.get_handlers(event))
        assert any(entry[0] is handler for entry in bound)


def test_the_state_machine_entries_reactor_relies_on() -> None:
    found = {key: fsm.TRANSITION_TABLE.get(key) for key in TRANSITIONS}
    assert found == TRANSITIONS


@pytest.mark.parametrize("ours", list(SWAPPED), ids=lambda c: c.__name__)
def test_swapped_classes_fit_the_objects_they_replace(assoc: Association, ours: type) -> None:
    base = SWAPPED[ours]
    assert issubclass(ours, base)
    # __class__ assignment runs no __init__ and needs the same instance layout.
    assert "__init__" not in vars(ours)
    assert "__slots__" not in vars(ours)
    with socket.socket() as raw:
        live = {
            Association: assoc,
            DULServiceProvider: assoc.dul,
            DIMSEServiceProvider: assoc.dimse,
            AssociationSocket: AssociationSocket(assoc, client_socket=raw),
        }
        assert type(live[base]) is base


def overrides() -> Iterator[Any]:
    for ours in [*SWAPPED, server._SharedSocketServer]:
        for name, method in vars(ours).items():
            if not callable(method) or name.startswith("__"):
                continue
            for base in ours.__mro__[1:]:
                if base.__module__.startswith("pynetdicom") and name in vars(base):
                    yield pytest.param(method, vars(base)[name], id=f"{ours.__name__}.{name}")
                    break


@pytest.mark.parametrize(("ours", "theirs"), list(overrides()))
def test_overridden_methods_keep_pynetdicoms_signature(ours: Any, theirs: Any) -> None:
    assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters)


def private_names_in_pnd() -> set[str]:
    names: set[str] = set()
    for path in PND.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.FunctionDef):
                names.add(node.name)
    return {name for name in names if name.startswith("_") and not name.endswith("__")}


def test_the_contract_lists_every_private_name_pnd_uses(assoc: Association) -> None:
    with socket.socket() as raw:
        theirs = (
            assoc,
            assoc.dul,
            assoc.dimse,
            assoc.acse,
            AssociationSocket(assoc, client_socket=raw),
            ThreadedAssociationServer,
        )
        used = {n for n in private_names_in_pnd() if any(hasattr(o, n) for o in theirs)}
    listed = {*ASSOCIATION, *DUL, *DIMSE, *SOCKET, *SERVER}
    assert sorted(used - listed) == [], "list these with why pnd/ needs them"


def test_negotiation_only_reads_the_acceptors_contexts() -> None:
    # The receiver gives every association one shared list of acceptor contexts.
    def contexts() -> list[PresentationContext]:
        made = []
        for uid in ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"):
            cx = PresentationContext()
            cx.abstract_syntax = uid
            cx.add_transfer_syntax("1.2.840.10008.1.2.1")
            cx.add_transfer_syntax("1.2.840.10008.1.2")
            made.append(cx)
        return made

    def state(cxs: list[PresentationContext]) -> list[tuple[object, ...]]:
        return [
            (
                *(cx.context_id, cx.abstract_syntax, list(cx.transfer_syntax), cx.result),
                *(cx.scu_role, cx.scp_role, cx.as_scu, cx.as_scp),
            )
            for cx in cxs
        ]

    shared = contexts()
    before = state(shared)
    proposed = contexts()
    for number, cx in enumerate(proposed):
        cx.context_id = 2 * number + 1
    roles: dict[UID, tuple[bool | None, bool | None]] = {
        UID("1.2.840.10008.5.1.4.1.1.2"): (True, True)
    }
    accepted, _ = negotiate_as_acceptor(proposed, shared, roles)
    assert [cx.result for cx in accepted] == [0, 0]
    assert state(shared) == before


def test_send_n_event_report_waits_for_the_association_thread_to_pause() -> None:
    # Why dispatch sets _is_paused around what follows an N-ACTION: called from the
    # association thread, this wait would never end otherwise.
    source = inspect.getsource(Association.send_n_event_report)
    assert "while not self._is_paused" in source
