"""End-to-end tests: the built packages under a booted systemd (root only)."""
