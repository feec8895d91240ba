"""Request logs: one JSON record per call, batched into Blob Storage (or a local folder)."""
