"""Drift monitoring: compare recent traffic with a reference window (see docs/drift.md)."""
