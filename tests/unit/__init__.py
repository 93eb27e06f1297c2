"""Unit tests, one folder per package of dcmrecvd and one file per module."""
