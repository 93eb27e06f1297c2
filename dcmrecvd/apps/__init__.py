"""The two programs, thin over the receiver: dcmrecv (DCMTK option grammar, life, exit codes)
and dcmrecvd (the daemon's start-up)."""
