"""Retraining: requests in Blob Storage start Databricks jobs (see docs/retraining.md)."""
