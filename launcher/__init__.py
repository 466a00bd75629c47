"""A DB-aware supervisor for an ASGI service: see DESIGN.md."""
