"""What is shipped: the Python packages and the systemd units."""
