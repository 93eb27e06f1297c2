"""After the file lands: series and study completion, manifests and hooks."""
