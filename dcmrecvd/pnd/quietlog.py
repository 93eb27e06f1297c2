"""Leave pynetdicom's PDU and DIMSE dump handlers off associations whose dumps nobody logs.

Workaround for a pynetdicom 3.0 limit, kept in this one module: with its process-wide
default _config.LOG_HANDLER_LEVEL = "standard", every association gets handlers for
EVT_PDU_RECV/SENT and EVT_DIMSE_RECV/SENT that format a DEBUG dump of each PDU and
DIMSE message before the logger is asked whether DEBUG is on. dcmrecvd passes the
libraries' DEBUG lines on only at trace level (logs.library_level), so elsewhere the
handlers are unbound when the connection opens.
"""

from __future__ import annotations

import logging

from pynetdicom import evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association

_PYNETDICOM = logging.getLogger("pynetdicom")

_DUMPS = (
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
)


def install(assoc: Association) -> None:
    """Unbind the dump handlers from `assoc` unless pynetdicom logs DEBUG; on EVT_CONN_OPEN."""
    if _PYNETDICOM.isEnabledFor(logging.DEBUG):
        return
    for event, handler in _DUMPS:
        assoc.unbind(event, handler)
