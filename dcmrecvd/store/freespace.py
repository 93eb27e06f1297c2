"""The free-space guard: refuse work before the output file system fills up.

Checked on every association request and C-STORE (and while a large object is
written), so the receiver recovers by itself as soon as space returns.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reserve:
    """Bytes and/or a percentage of the file system to keep free; 0 disables each."""

    bytes: int = 0
    percent: float = 0.0
    statvfs: Callable[[str], os.statvfs_result] = field(default=os.statvfs, compare=False)

    @property
    def enabled(self) -> bool:
        return self.bytes > 0 or self.percent > 0

    def shortfall(self, directory: str) -> str | None:
        """Why `directory`'s file system is below the reserve, or None if it is not.

        A file system that cannot be queried counts as not below: the write that
        follows then fails with the real reason.
        """
        if not self.enabled:
            return None
        try:
            st = self.statvfs(directory or ".")
        except OSError:
            return None
        free = st.f_bavail * st.f_frsize
        total = st.f_blocks * st.f_frsize
        if self.bytes > 0 and free < self.bytes:
            return (
                f"free space on {directory or '.'} is {free} bytes, "
                f"below the reserve of {self.bytes} bytes"
            )
        if self.percent > 0 and free * 100 < self.percent * total:
            return (
                f"free space on {directory or '.'} is {free} bytes "
                f"({free * 100 / max(total, 1):.1f}%), below the reserve of {self.percent:g}%"
            )
        return None
