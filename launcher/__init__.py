"""A DB-aware supervisor for an ASGI service: see docs/design.md."""
