"""Side-by-side measurements of the launcher and what users run today (python -m bench)."""
