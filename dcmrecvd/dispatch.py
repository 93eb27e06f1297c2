"""Serve DIMSE requests by their command, as DCMTK's storage SCP does.

Workaround for a pynetdicom 3.0 limit, kept in this one module: Association picks the
service class for a request from the SOP Class UID the request names, not from its
command, so a C-FIND naming a storage class reaches the storage service, which fails on
it (an AttributeError logged with a traceback) before aborting, while a C-FIND naming a
query model reaches EVT_C_FIND. DCMTK's dcmrecv treats every command but C-ECHO and
C-STORE alike: one error line, then an abort. The association thread fetches each
request from the DIMSE provider's get_msg, so that is where the others are refused.

The same limit drops a C-STORE-RQ whose Affected SOP Instance (or Class) UID is empty
or absent as invalid, unanswered; dcmrecv names such an object from its dataset. Here
the UIDs are taken from the dataset's header, which normal mode has read by then; when
there is none (bit-preserving mode names from the command alone), the association is
aborted, as dcmrecv +B aborts when it cannot name a file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_ECHO, C_STORE, DIMSEPrimitive, DimseServiceType

from dcmrecvd.incoming import IncomingObject
from dcmrecvd.streaming import StreamedDataSet, StreamingDIMSE

LOG = logging.getLogger("dcmrecv")

# Called with the association and the request before the association is aborted.
Refusal = Callable[[Association, DIMSEPrimitive], None]


class StorageOnlyDIMSE(StreamingDIMSE):
    """A streaming DIMSE provider that hands the association C-ECHO and C-STORE only."""

    _refusal: Refusal

    def get_msg(self, block: bool = False) -> tuple[None, None] | tuple[int, DimseServiceType]:
        item = super().get_msg(block)
        msg = item[1]
        if isinstance(msg, C_STORE) and not msg.is_valid_request:
            _uids_from_dataset(msg)
            if not msg.is_valid_request:
                LOG.error(
                    "cannot generate directory or file name for received object:"
                    " no SOP Instance UID in the command or the dataset"
                )
                self.assoc.abort()
                return None, None
        if msg is None or isinstance(msg, C_ECHO | C_STORE) or not msg.is_valid_request:
            return item
        self._refusal(self.assoc, msg)
        self.assoc.abort()
        return None, None


def _uids_from_dataset(request: C_STORE) -> None:
    dataset = request.DataSet
    sink = dataset.sink if isinstance(dataset, StreamedDataSet) else None
    if not isinstance(sink, IncomingObject):
        return
    found = sink.header
    try:
        if not request.AffectedSOPClassUID and found.sop_class_uid:
            request.AffectedSOPClassUID = found.sop_class_uid
        if not request.AffectedSOPInstanceUID and found.sop_instance_uid:
            request.AffectedSOPInstanceUID = found.sop_instance_uid
    except ValueError:  # pynetdicom refuses a malformed UID; the request stays invalid
        return


def install(assoc: object, refusal: Refusal) -> None:
    """Abort `assoc` on any request but C-ECHO and C-STORE, after calling `refusal`.

    Call after streaming.install, before the association is accepted.
    """
    dimse = assoc.dimse  # type: ignore[attr-defined]
    if not isinstance(dimse, StreamingDIMSE):
        raise TypeError("dispatch.install needs the streaming DIMSE provider")
    # The same class swap as streaming.install: the provider is made by Association.
    dimse.__class__ = StorageOnlyDIMSE
    cast(StorageOnlyDIMSE, dimse)._refusal = refusal
