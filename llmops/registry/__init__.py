"""Registry-driven serving: public models bound to MLflow registry aliases (docs/registry.md)."""
