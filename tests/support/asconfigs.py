"""The DCMTK association configuration (asconfig, -xf) texts the tests share, and how
they load one as dcmrecv's -xf would."""

from __future__ import annotations

from pathlib import Path

from dcmrecvd.apps.dcmrecv_life import load_profile
from dcmrecvd.profiles import Profile
from dcmrecvd.settings import Settings

# One profile, Store: CT in Explicit VR Little Endian.
STORE_CFG = """\
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LittleEndianExplicit

[[PresentationContexts]]
[Store]
PresentationContext1 = CTImageStorage\\Uncompressed

[[Profiles]]
[Store]
PresentationContexts = Store
"""

# Verification and CT, Explicit or Implicit VR Little Endian.
VERIFY_CT_CFG = """\
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LittleEndianExplicit
TransferSyntax2 = LittleEndianImplicit

[[PresentationContexts]]
[Store]
PresentationContext1 = VerificationSOPClass\\Uncompressed
PresentationContext2 = CTImageStorage\\Uncompressed

[[Profiles]]
[Store]
PresentationContexts = Store
"""

# dcmrecv side by side with ours: Verification and the objects dicomgen writes.
DCMRECV_CFG = """\
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LittleEndianExplicit
TransferSyntax2 = LittleEndianImplicit

[[PresentationContexts]]
[Store]
PresentationContext1 = VerificationSOPClass\\Uncompressed
PresentationContext2 = CTImageStorage\\Uncompressed
PresentationContext3 = MRImageStorage\\Uncompressed
PresentationContext4 = BasicTextSRStorage\\Uncompressed
PresentationContext5 = EncapsulatedPDFStorage\\Uncompressed
PresentationContext6 = SecondaryCaptureImageStorage\\Uncompressed
PresentationContext7 = 1.2.3.4.999.1\\Uncompressed

[[Profiles]]
[Store]
PresentationContexts = Store
"""

# Compressed syntaxes first: a receiver picks the first of its own list that the sender
# proposes, so objects travel as they are stored wherever the sender offers that.
SENDERS_CFG = """\
[[TransferSyntaxes]]
[AsSent]
TransferSyntax1 = JPEGLossless:Non-hierarchical-1stOrderPrediction
TransferSyntax2 = JPEGBaseline
TransferSyntax3 = DeflatedLittleEndianExplicit
TransferSyntax4 = LittleEndianExplicit
TransferSyntax5 = BigEndianExplicit
TransferSyntax6 = LittleEndianImplicit

[[PresentationContexts]]
[Senders]
PresentationContext1 = VerificationSOPClass\\AsSent
PresentationContext2 = CTImageStorage\\AsSent
PresentationContext3 = MRImageStorage\\AsSent
PresentationContext4 = SecondaryCaptureImageStorage\\AsSent
PresentationContext5 = BasicTextSRStorage\\AsSent
PresentationContext6 = ComprehensiveSRStorage\\AsSent
PresentationContext7 = 1.2.3.4.999.1\\AsSent

[[Profiles]]
[Senders]
PresentationContexts = Senders
"""


def load(directory: Path, text: str, profile: str = "Store") -> Profile:
    """`text` written to `directory`/store.cfg, and its `profile` loaded as -xf does."""
    cfg = directory / "store.cfg"
    cfg.write_text(text)
    return load_profile(Settings(config_file=cfg, profile_name=profile))
