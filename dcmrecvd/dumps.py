"""DCMTK's dump of an association negotiation (ASC_dumpParameters), as +v prints it.

Pure text: the receiver fills a Negotiation from the A-ASSOCIATE-RQ and its answer, and
`dump` lays it out line for line as DCMTK 3.6.7's dcmrecv does, UIDs by DCMTK name.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from dcmrecvd.config.uidnames import dcmtk_name_of
from dcmrecvd.negotiation import Result

_RESULT_TEXT = {
    Result.ACCEPTANCE: "Accepted",
    Result.USER_REJECTION: "User Rejection",
    Result.NO_REASON: "No Reason",
    Result.ABSTRACT_SYNTAX_NOT_SUPPORTED: "Abstract Syntax Not Supported",
    Result.TRANSFER_SYNTAXES_NOT_SUPPORTED: "Transfer Syntaxes Not Supported",
}


class Pdu(enum.Enum):
    """Which A-ASSOCIATE PDU a dump shows."""

    RQ = "RQ"
    AC = "AC"
    RJ = "RJ"


@dataclass(frozen=True)
class ContextDump:
    """One presentation context; `result` is None in a request."""

    context_id: int
    abstract_syntax: str
    # DCMTK's role names: Default, SCU, SCP, SCP/SCU (negotiation.*_role_name).
    proposed_role: str
    proposed_syntaxes: tuple[str, ...]
    result: Result | None = None
    accepted_role: str = "Default"
    accepted_syntax: str | None = None


@dataclass(frozen=True)
class Negotiation:
    """What DCMTK prints of one association negotiation."""

    our_class_uid: str
    our_version: str
    their_class_uid: str
    their_version: str
    application_context: str
    calling: str
    called: str
    our_max_pdu: int
    their_max_pdu: int
    contexts: tuple[ContextDump, ...]
    requested_extended: tuple[tuple[str, bytes], ...] = ()
    accepted_extended: tuple[tuple[str, bytes], ...] = ()


def _uid(uid: str) -> str:
    name = dcmtk_name_of().get(uid)
    return f"={name}" if name else uid


def _extended(title: str, items: Sequence[tuple[str, bytes]]) -> list[str]:
    if not items:
        return [f"{title} none"]
    lines = [title.rstrip()]
    for uid, data in items:
        name = dcmtk_name_of().get(uid)
        lines.append(f"  ={name} ({uid})" if name else f"  {uid}")
        lines.append("    [" + ", ".join(f"0x{byte:02x}" for byte in data) + "]")
    return lines


def _context(context: ContextDump, pdu: Pdu) -> list[str]:
    result = None if pdu is Pdu.RQ else context.result
    state = "Proposed" if result is None else _RESULT_TEXT[result]
    lines = [
        f"  Context ID:        {context.context_id} ({state})",
        f"    Abstract Syntax: {_uid(context.abstract_syntax)}",
        f"    Proposed SCP/SCU Role: {context.proposed_role}",
    ]
    if pdu is Pdu.RQ:
        lines.append("    Proposed Transfer Syntax(es):")
        lines.extend(f"      {_uid(ts)}" for ts in context.proposed_syntaxes)
        return lines
    lines.append(f"    Accepted SCP/SCU Role: {context.accepted_role}")
    if context.accepted_syntax is not None:
        lines.append(f"    Accepted Transfer Syntax: {_uid(context.accepted_syntax)}")
    return lines


def dump(negotiation: Negotiation, pdu: Pdu) -> str:
    """The BEGIN ... END block DCMTK logs for `pdu`, without a trailing newline."""
    n = negotiation
    responding = "" if pdu is Pdu.RQ else n.called
    lines = [
        f"====================== BEGIN A-ASSOCIATE-{pdu.value} =====================",
        f"Our Implementation Class UID:      {n.our_class_uid}",
        f"Our Implementation Version Name:   {n.our_version}",
        f"Their Implementation Class UID:    {n.their_class_uid}",
        f"Their Implementation Version Name: {n.their_version}",
        f"Application Context Name:    {n.application_context}",
        f"Calling Application Name:    {n.calling}",
        f"Called Application Name:     {n.called}",
        f"Responding Application Name: {responding}",
        f"Our Max PDU Receive Size:    {n.our_max_pdu}",
        f"Their Max PDU Receive Size:  {n.their_max_pdu}",
        "Presentation Contexts:",
    ]
    for context in n.contexts:
        lines.extend(_context(context, pdu))
    lines.extend(_extended("Requested Extended Negotiation:", n.requested_extended))
    accepted = () if pdu is Pdu.RQ else n.accepted_extended
    lines.extend(_extended("Accepted Extended Negotiation: ", accepted))
    lines.append("Requested User Identity Negotiation: none")
    lines.append("User Identity Negotiation Response:  none")
    lines.append(f"======================= END A-ASSOCIATE-{pdu.value} ======================")
    return "\n".join(lines)
