"""Association negotiation with DCMTK 3.6.7's rules (DcmAssociationConfiguration).

`negotiate` is the pure decision: for each proposed presentation context, the SCP's
own transfer-syntax order decides (the first syntax of the profile's list that the
requestor proposed anywhere in that context), role selection follows DCMTK's table
(dcmnet/dul.h, DUL_SC_ROLE), and extended-negotiation items go back for every SOP
class that has an accepted context, whether or not the requestor asked.

`pynetdicom_contexts` turns a profile into what pynetdicom's acceptor uses. pynetdicom
already prefers the acceptor's transfer-syntax order and refuses with 3 and 4 as DCMTK
does; what it cannot express (DCMTK's role table, extended items nobody asked for, an
A-ASSOCIATE-RJ when no context is acceptable) the receiver applies from `negotiate`'s
outcome before pynetdicom negotiates (see receiver.py).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pynetdicom.presentation import PresentationContext

from dcmrecvd.profiles import Profile, Role

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"


class Result(enum.IntEnum):
    """Presentation context results (PS3.8 9.3.3.2)."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    NO_REASON = 2
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


class _ScRole(enum.Enum):
    """DCMTK's DUL_SC_ROLE: the requestor's role for one context."""

    NONE = "none"
    DEFAULT = "default"
    SCU = "scu"
    SCP = "scp"
    SCUSCP = "scuscp"


@dataclass(frozen=True)
class Proposed:
    """One presentation context of an A-ASSOCIATE-RQ."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class ContextOutcome:
    """The answer to one proposed context; transfer_syntax is None when refused."""

    context_id: int
    abstract_syntax: str
    result: Result
    transfer_syntax: str | None


@dataclass(frozen=True)
class RoleReply:
    """An SCP/SCU role selection item for the A-ASSOCIATE-AC."""

    sop_class_uid: str
    scu_role: bool
    scp_role: bool


@dataclass(frozen=True)
class Outcome:
    """Everything negotiation decides for one association."""

    contexts: tuple[ContextOutcome, ...]
    role_replies: tuple[RoleReply, ...]
    extended_negotiation: tuple[tuple[str, bytes], ...]

    @property
    def accepted(self) -> tuple[ContextOutcome, ...]:
        return tuple(c for c in self.contexts if c.result is Result.ACCEPTANCE)


def _proposed_role(roles: Mapping[str, tuple[bool, bool]], abstract_syntax: str) -> _ScRole:
    # DCMTK (dulfsm.cc): equal flags, even both 0, read as SCU/SCP.
    if abstract_syntax not in roles:
        return _ScRole.DEFAULT
    scu, scp = roles[abstract_syntax]
    if scu == scp:
        return _ScRole.SCUSCP
    return _ScRole.SCU if scu else _ScRole.SCP


def _configured_role(profile: Profile, abstract_syntax: str) -> _ScRole:
    for uid, role in profile.roles or ():
        if uid == abstract_syntax:
            return {Role.SCU: _ScRole.SCU, Role.SCP: _ScRole.SCP, Role.BOTH: _ScRole.SCUSCP}[role]
    return _ScRole.DEFAULT


_ROLE_NAMES = {
    _ScRole.NONE: "None",
    _ScRole.DEFAULT: "Default",
    _ScRole.SCU: "SCU",
    _ScRole.SCP: "SCP",
    _ScRole.SCUSCP: "SCP/SCU",
}


def proposed_role_name(roles: Mapping[str, tuple[bool, bool]], abstract_syntax: str) -> str:
    """DCMTK's name for the role the requestor proposed for `abstract_syntax`."""
    return _ROLE_NAMES[_proposed_role(roles, abstract_syntax)]


def configured_role_name(profile: Profile, abstract_syntax: str) -> str:
    """DCMTK's name for the role the profile grants for `abstract_syntax`."""
    return _ROLE_NAMES[_configured_role(profile, abstract_syntax)]


def _role_reply(abstract_syntax: str, proposed: _ScRole, accepted: _ScRole) -> RoleReply | None:
    """DCMTK's constructSCUSCPRoles for one accepted context."""
    if _ScRole.DEFAULT in (proposed, accepted):
        return None
    may_scu = proposed is not _ScRole.SCP
    may_scp = proposed is not _ScRole.SCU
    scu = may_scu and accepted in (_ScRole.SCU, _ScRole.SCUSCP)
    scp = may_scp and accepted in (_ScRole.SCP, _ScRole.SCUSCP)
    return RoleReply(abstract_syntax, scu, scp)


def negotiate(
    profile: Profile,
    proposed: Sequence[Proposed],
    proposed_roles: Mapping[str, tuple[bool, bool]],
) -> Outcome:
    """Decide every proposed context as DCMTK's evaluateAssociationParameters does."""
    syntaxes = {c.abstract_syntax: c.transfer_syntaxes for c in profile.contexts}
    outcomes: list[ContextOutcome] = []
    replies: list[RoleReply] = []
    for pc in proposed:
        if pc.abstract_syntax not in syntaxes:
            result, chosen = Result.ABSTRACT_SYNTAX_NOT_SUPPORTED, None
        else:
            chosen = next(
                (ts for ts in syntaxes[pc.abstract_syntax] if ts in pc.transfer_syntaxes), None
            )
            result = Result.ACCEPTANCE if chosen else Result.TRANSFER_SYNTAXES_NOT_SUPPORTED
        if result is Result.ACCEPTANCE:
            asked = _proposed_role(proposed_roles, pc.abstract_syntax)
            granted = _configured_role(profile, pc.abstract_syntax)
            # DCMTK refuses a context whose requestor keeps the default (SCU) role when
            # the profile grants only SCP.
            if asked is _ScRole.DEFAULT and granted is _ScRole.SCP:
                result, chosen = Result.NO_REASON, None
            else:
                reply = _role_reply(pc.abstract_syntax, asked, granted)
                if reply is not None:
                    replies.append(reply)
        outcomes.append(ContextOutcome(pc.context_id, pc.abstract_syntax, result, chosen))

    accepted = {o.abstract_syntax for o in outcomes if o.result is Result.ACCEPTANCE}
    extended = tuple((uid, data) for uid, data in profile.extended_negotiation if uid in accepted)
    return Outcome(tuple(outcomes), tuple(replies), extended)


def representable(outcome: Outcome) -> Outcome:
    """The closest outcome that pynetdicom 3.0 can send.

    Two DCMTK answers have no pynetdicom form: a context refused with result 2 (its
    acceptor only refuses with 1, 3 or 4), and an accepted context whose role reply
    grants neither role (it refuses to encode a role item with both flags 0). Both
    become a refusal with result 3, with no role item and no extended item for it.
    """
    refused = {c.abstract_syntax for c in outcome.contexts if c.result is Result.NO_REASON}
    refused |= {r.sop_class_uid for r in outcome.role_replies if not (r.scu_role or r.scp_role)}
    if not refused:
        return outcome
    contexts = tuple(
        ContextOutcome(c.context_id, c.abstract_syntax, Result.ABSTRACT_SYNTAX_NOT_SUPPORTED, None)
        if c.abstract_syntax in refused
        else c
        for c in outcome.contexts
    )
    return Outcome(
        contexts,
        tuple(r for r in outcome.role_replies if r.sop_class_uid not in refused),
        tuple(e for e in outcome.extended_negotiation if e[0] not in refused),
    )


def pynetdicom_contexts(
    profile: Profile, refused: frozenset[str] = frozenset()
) -> list[PresentationContext]:
    """The acceptor contexts for pynetdicom, leaving out the abstract syntaxes in `refused`.

    Roles stay unset so that pynetdicom accepts with the default roles and adds no role
    items of its own: the receiver adds DCMTK's role replies itself.
    """
    contexts = []
    for accepted in profile.contexts:
        if accepted.abstract_syntax in refused:
            continue
        cx = PresentationContext()
        cx.abstract_syntax = accepted.abstract_syntax
        for ts in accepted.transfer_syntaxes:
            cx.add_transfer_syntax(ts)
        contexts.append(cx)
    return contexts
