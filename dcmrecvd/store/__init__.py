"""Bytes to durable files: the incoming object, validation and header walks, File Meta, temp
file + fsync + rename, O_DIRECT, placement, naming and free space. No pynetdicom here."""
