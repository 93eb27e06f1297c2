"""Unit tests of dcmrecvd.events."""
