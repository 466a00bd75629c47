"""The FastAPI service the launcher supervises. It reads only its environment."""
