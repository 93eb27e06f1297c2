"""Helpers shared by the tests: peers, raw PDUs, generated objects, senders, networking."""
