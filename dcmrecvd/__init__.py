"""dcmrecvd: a DICOM storage receiver, drop-in for DCMTK's dcmrecv and a systemd daemon."""

__version__ = "0.1.0"
