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

# Lossless syntaxes come before lossy ones so that a modality offering both sends the
# original pixels; uncompressed first because every sender can produce them.
_LOSSLESS_FIRST = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    IMPLICIT_VR_LE,
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Lossless
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.5",  # RLE Lossless
)


def all_transfer_syntaxes() -> tuple[str, ...]:
    """Every transfer syntax pynetdicom knows, lossless first (dcmrecvd's "all")."""
    from pynetdicom import ALL_TRANSFER_SYNTAXES  # noqa: PLC0415 (keeps this module light)

    rest = tuple(str(ts) for ts in ALL_TRANSFER_SYNTAXES if ts not in _LOSSLESS_FIRST)
    return _LOSSLESS_FIRST + rest


def all_storage_sop_classes() -> tuple[str, ...]:
    """Every storage SOP class pynetdicom knows (170 in 3.0), in its order."""
    from pynetdicom import AllStoragePresentationContexts  # noqa: PLC0415

    return tuple(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)


def all_storage_profile(name: str = "default") -> Profile:
    """The embedded default: Verification and every storage SOP class, any transfer syntax."""
    syntaxes = all_transfer_syntaxes()
    storage = tuple(AcceptedContext(uid, syntaxes) for uid in all_storage_sop_classes())
    # Verification carries no dataset: the uncompressed syntaxes are all it needs.
    verification = AcceptedContext(VERIFICATION, _LOSSLESS_FIRST[:4])
    return Profile(name=name, contexts=(verification, *storage))
