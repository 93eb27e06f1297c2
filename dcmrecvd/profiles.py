"""Association negotiation profiles: what an SCP accepts, in DCMTK's terms.

A Profile is the resolved form of one DCMTK asconfig profile (or of the daemon's INI
profiles): every UID is numeric, every list is in the SCP's order of preference.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"


class Role(enum.Enum):
    """The roles a [[SCPSCURoleSelection]] entry grants the requestor's peer (us)."""

    SCU = "SCU"
    SCP = "SCP"
    BOTH = "BOTH"


@dataclass(frozen=True)
class AcceptedContext:
    """An abstract syntax and the transfer syntaxes accepted for it, most preferred first."""

    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class Profile:
    """One SCP negotiation profile."""

    name: str
    contexts: tuple[AcceptedContext, ...]
    # None: no role list in the profile, so proposed roles are ignored (DCMTK default roles).
    roles: tuple[tuple[str, Role], ...] | None = None
    extended_negotiation: tuple[tuple[str, bytes], ...] = ()


# dcmrecv without -xf: Verification with Implicit VR Little Endian only.
BUILTIN_VERIFICATION = Profile(
    name="DEFAULT",
    contexts=(AcceptedContext(VERIFICATION, (IMPLICIT_VR_LE,)),),
)
