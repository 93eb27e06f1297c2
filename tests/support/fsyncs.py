"""What the store makes durable, seen from a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcmrecvd.store import storage


def record_directory_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The directories storage.fsync_directory is asked to make durable from now on,
    in order (each still is)."""
    synced: list[Path] = []
    real = storage.fsync_directory

    def fsync_directory(directory: Path) -> None:
        synced.append(directory)
        real(directory)

    monkeypatch.setattr(storage, "fsync_directory", fsync_directory)
    return synced
