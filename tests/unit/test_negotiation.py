"""The pure DCMTK negotiator: transfer-syntax preference, results, roles, extended items."""

from __future__ import annotations

import pytest

from dcmrecvd.negotiation import (
    ContextOutcome,
    Proposed,
    Result,
    RoleReply,
    negotiate,
    pynetdicom_contexts,
    representable,
)
from dcmrecvd.profiles import AcceptedContext, Profile, Role

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
BIG = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def profile(
    roles: tuple[tuple[str, Role], ...] | None = None,
    extended: tuple[tuple[str, bytes], ...] = (),
) -> Profile:
    return Profile(
        name="TEST",
        contexts=(
            AcceptedContext(VERIFICATION, (EXPLICIT, BIG, IMPLICIT)),
            AcceptedContext(CT, (JPEG_BASELINE, EXPLICIT, BIG, IMPLICIT)),
        ),
        roles=roles,
        extended_negotiation=extended,
    )


def test_scp_order_decides_not_the_requestors() -> None:
    out = negotiate(profile(), [Proposed(1, CT, (IMPLICIT, EXPLICIT, JPEG_BASELINE, BIG))], {})
    assert out.contexts == (ContextOutcome(1, CT, Result.ACCEPTANCE, JPEG_BASELINE),)


def test_first_configured_syntax_that_was_proposed_anywhere() -> None:
    out = negotiate(profile(), [Proposed(1, CT, (IMPLICIT, BIG))], {})
    assert out.contexts[0].transfer_syntax == BIG
    out = negotiate(profile(), [Proposed(3, VERIFICATION, (BIG, IMPLICIT))], {})
    assert out.contexts[0].transfer_syntax == BIG


def test_unknown_abstract_syntax_is_3_and_no_common_syntax_is_4() -> None:
    out = negotiate(profile(), [Proposed(1, MR, (IMPLICIT,)), Proposed(3, CT, ("1.2.3.4",))], {})
    assert [c.result for c in out.contexts] == [
        Result.ABSTRACT_SYNTAX_NOT_SUPPORTED,
        Result.TRANSFER_SYNTAXES_NOT_SUPPORTED,
    ]
    assert out.accepted == ()


def test_same_abstract_syntax_twice_is_evaluated_per_context() -> None:
    out = negotiate(profile(), [Proposed(1, CT, (IMPLICIT,)), Proposed(3, CT, (EXPLICIT,))], {})
    assert [(c.context_id, c.transfer_syntax) for c in out.accepted] == [
        (1, IMPLICIT),
        (3, EXPLICIT),
    ]


def test_without_role_list_proposed_roles_get_no_reply() -> None:
    out = negotiate(profile(), [Proposed(1, CT, (EXPLICIT,))], {CT: (True, True)})
    assert out.accepted and out.role_replies == ()


# DCMTK's table (dcmnet/include/dcmtk/dcmnet/dul.h, DUL_SC_ROLE): requestor proposal x
# acceptor setting -> reply item (scu, scp); None = no item; "refuse" = context refused.
ROLE_TABLE = [
    ((True, False), Role.SCP, (False, False)),
    ((True, False), Role.SCU, (True, False)),
    ((True, False), Role.BOTH, (True, False)),
    ((True, False), None, None),
    ((False, True), Role.SCP, (False, True)),
    ((False, True), Role.SCU, (False, False)),
    ((False, True), Role.BOTH, (False, True)),
    ((False, True), None, None),
    ((True, True), Role.SCP, (False, True)),
    ((True, True), Role.SCU, (True, False)),
    ((True, True), Role.BOTH, (True, True)),
    ((True, True), None, None),
    (None, Role.SCP, "refuse"),
    (None, Role.SCU, None),
    (None, Role.BOTH, None),
    (None, None, None),
]


@pytest.mark.parametrize(("proposal", "setting", "expected"), ROLE_TABLE)
def test_role_table(
    proposal: tuple[bool, bool] | None, setting: Role | None, expected: object
) -> None:
    roles = ((CT, setting),) if setting else ()
    proposed = {CT: proposal} if proposal else {}
    out = negotiate(profile(roles=roles), [Proposed(1, CT, (EXPLICIT,))], proposed)
    if expected == "refuse":
        assert out.contexts[0].result is Result.NO_REASON
        assert out.role_replies == ()
        return
    assert out.contexts[0].result is Result.ACCEPTANCE
    if expected is None:
        assert out.role_replies == ()
    else:
        assert isinstance(expected, tuple)
        assert out.role_replies == (RoleReply(CT, *expected),)


def test_both_role_flags_zero_reads_as_scu_scp() -> None:
    out = negotiate(
        profile(roles=((CT, Role.BOTH),)), [Proposed(1, CT, (EXPLICIT,))], {CT: (False, False)}
    )
    assert out.role_replies == (RoleReply(CT, True, True),)


def test_role_reply_only_for_accepted_contexts() -> None:
    out = negotiate(
        profile(roles=((CT, Role.BOTH),)), [Proposed(1, CT, ("1.2.3",))], {CT: (True, True)}
    )
    assert out.role_replies == ()


def test_extended_items_for_accepted_classes_even_unasked() -> None:
    ext = ((CT, b"\x01\x00"), (MR, b"\x02"), (VERIFICATION, b"\x03"))
    out = negotiate(
        profile(extended=ext),
        [Proposed(1, CT, (EXPLICIT,)), Proposed(3, VERIFICATION, ("1.2.3",))],
        {},
    )
    assert out.extended_negotiation == ((CT, b"\x01\x00"),)


def test_pynetdicom_contexts_keep_order_and_leave_roles_unset() -> None:
    cxs = pynetdicom_contexts(profile(), frozenset({VERIFICATION}))
    assert [cx.abstract_syntax for cx in cxs] == [CT]
    assert cxs[0].transfer_syntax == [JPEG_BASELINE, EXPLICIT, BIG, IMPLICIT]
    assert (cxs[0].scu_role, cxs[0].scp_role) == (None, None)


def test_representable_turns_unsendable_answers_into_refusals() -> None:
    ext = ((CT, b"\x01"), (MR, b"\x02"))
    prof = Profile(
        name="R",
        contexts=(AcceptedContext(CT, (EXPLICIT,)), AcceptedContext(MR, (EXPLICIT,))),
        roles=((CT, Role.SCP), (MR, Role.SCP)),
        extended_negotiation=ext,
    )
    # CT: default role proposed, only SCP granted -> DCMTK result 2.
    # MR: SCU proposed, only SCP granted -> DCMTK accepts with a (0, 0) role reply.
    out = negotiate(
        prof, [Proposed(1, CT, (EXPLICIT,)), Proposed(3, MR, (EXPLICIT,))], {MR: (True, False)}
    )
    assert [c.result for c in out.contexts] == [Result.NO_REASON, Result.ACCEPTANCE]
    assert out.role_replies == (RoleReply(MR, False, False),)
    sendable = representable(out)
    assert [c.result for c in sendable.contexts] == [Result.ABSTRACT_SYNTAX_NOT_SUPPORTED] * 2
    assert sendable.role_replies == ()
    assert sendable.extended_negotiation == ()


def test_representable_keeps_what_pynetdicom_can_send() -> None:
    out = negotiate(
        profile(roles=((CT, Role.BOTH),)), [Proposed(1, CT, (EXPLICIT,))], {CT: (True, True)}
    )
    assert representable(out) == out
