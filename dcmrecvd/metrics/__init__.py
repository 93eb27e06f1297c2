"""Counters and gauges for the metrics endpoint and `dcmrecvd status`."""
