"""Everything that extends pynetdicom: the listening server, the reactor, PDU limits, quiet
logging and the DIMSE path. The only package that may touch pynetdicom's internals."""
