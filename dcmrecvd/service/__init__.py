"""The daemon's process model: pre-fork workers, the shared board of counters and limits, and
the systemd edge."""
