"""Structured log fields: who an association is, attached to every line it logs.

pynetdicom runs an association's negotiation and its DIMSE handlers in one thread of
its own, so the receiver binds the association's fields to that thread when the
A-ASSOCIATE-RQ arrives, and `AssociationFields` copies them onto every record logged
from it, ours and pynetdicom's alike. Per-event fields (SOP_INSTANCE_UID, PATH, ...)
travel as `extra=` on the line they belong to. Field names are journald's: upper case,
so that the journal handler sends exactly these (see systemd.journal_handler).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading

_current = threading.local()
_ids = itertools.count(1)


def new_association_id() -> str:
    """Unique within this boot of the process: "<pid>.<n>"."""
    return f"{os.getpid()}.{next(_ids)}"


def bind(**fields: str) -> None:
    """Attach `fields` to every record this thread logs from now on."""
    _current.fields = fields


def bound() -> dict[str, str]:
    """The fields bound to this thread (empty outside an association)."""
    fields: dict[str, str] = getattr(_current, "fields", {})
    return fields


class AssociationFields(logging.Filter):
    """Adds the thread's association fields to each record that lacks them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in bound().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True
