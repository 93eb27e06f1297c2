"""Whether a receiver stored exactly what was sent: checked on its output directory
after every run, for every receiver alike."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from .ulclient import EXPLICIT_VR_LE


@dataclass
class Verification:
    """What the output directory held against what was sent."""

    expected: int
    files: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    not_explicit_vr_le: list[str] = field(default_factory=list)
    compared: int = 0
    differing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every file one instance that was sent, every instance sent there once, as
        Explicit VR LE, and the sample identical to what was sent."""
        return self.files == self.expected and not (
            self.missing
            or self.unexpected
            or self.duplicates
            or self.unreadable
            or self.not_explicit_vr_le
            or self.differing
        )

    def problems(self) -> str:
        """The first few of each kind of problem, for a log line."""
        parts = [] if self.files == self.expected else [f"{self.files} files for {self.expected}"]
        for name in (
            "missing",
            "unexpected",
            "duplicates",
            "unreadable",
            "not_explicit_vr_le",
            "differing",
        ):
            found: list[str] = getattr(self, name)
            if found:
                parts.append(f"{len(found)} {name.replace('_', ' ')} (e.g. {found[0]})")
        return "; ".join(parts)


def sample(uids: list[str], size: int, seed: int) -> list[str]:
    """The first and the last UID in sorted order and `size` more drawn with `seed`."""
    ordered = sorted(uids)
    if not ordered:
        return []
    drawn = random.Random(seed).sample(ordered, min(size, len(ordered)))
    return sorted({ordered[0], ordered[-1], *drawn})


def same_content(sent: Path, stored: Path) -> bool:
    """Pixel Data byte for byte, or, for an object without, every element of the dataset."""
    original = pydicom.dcmread(sent)
    received = pydicom.dcmread(stored)
    if "PixelData" in original:
        return bool(original.PixelData == received.get("PixelData"))
    return all(received.get(element.tag) == element for element in original)


def verify(outdir: Path, expected: Mapping[str, Path], sample_size: int, seed: int) -> Verification:
    """Check `outdir` (searched recursively: receivers differ in their layouts) against
    `expected`, SOP Instance UID -> the file that was sent."""
    result = Verification(expected=len(expected))
    stored: dict[str, Path] = {}
    for path in sorted(p for p in outdir.rglob("*") if p.is_file()):
        result.files += 1
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            instance = str(ds.SOPInstanceUID)
            syntax = str(ds.file_meta.TransferSyntaxUID)
        except (InvalidDicomError, AttributeError, EOFError, OSError, ValueError):
            result.unreadable.append(path.name)
            continue
        if syntax != EXPLICIT_VR_LE:
            result.not_explicit_vr_le.append(path.name)
        if instance in stored:
            result.duplicates.append(instance)
        elif instance not in expected:
            result.unexpected.append(instance)
        else:
            stored[instance] = path
    result.missing = sorted(set(expected) - set(stored))
    for instance in sample(list(stored), sample_size, seed):
        result.compared += 1
        if not same_content(expected[instance], stored[instance]):
            result.differing.append(instance)
    return result
