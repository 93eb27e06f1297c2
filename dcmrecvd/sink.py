"""The contract between the DIMSE path (pnd/) and the object store (store/).

For each C-STORE-RQ whose command has arrived, the DIMSE path asks a SinkFactory for a
Sink, given the StoreCommand, and writes the dataset's fragments to it as they arrive.
Neither side imports the other: both import this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class StoreCommand:
    """What the C-STORE-RQ command tells before its dataset arrives."""

    sop_class_uid: str
    sop_instance_uid: str
    context_id: int
    # The accepted transfer syntax of the context, None if the context is not accepted.
    transfer_syntax: str | None
    calling_ae_title: str
    message_id: int


class Sink(Protocol):
    """Receives one dataset; called from pynetdicom's DUL thread, must not raise."""

    def write(self, data: memoryview) -> None: ...

    def finish(self) -> None:
        """The last fragment has arrived."""

    def discard(self) -> None:
        """The dataset will never be handled (connection lost); free everything."""


SinkFactory = Callable[[StoreCommand], Sink]


@runtime_checkable
class DatasetUids(Protocol):
    """A sink that reads its dataset's own SOP Class and Instance UIDs, for a request
    whose command lacks them."""

    def dataset_uids(self) -> tuple[str, str]:
        """The dataset's SOP Class and Instance UIDs, "" where it has none (yet)."""
        ...


class Discarding:
    """A sink that drops the dataset: --ignore, and the rest of one whose sink failed."""

    def write(self, data: memoryview) -> None:
        pass

    def finish(self) -> None:
        pass

    def discard(self) -> None:
        pass
