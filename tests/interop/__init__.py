"""Side by side with DCMTK's dcmrecv and foreign senders (marked interop)."""
