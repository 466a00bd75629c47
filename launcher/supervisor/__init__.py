"""What stays resident in the launcher for the container's life: the state machine, the I/O
shell and its loop, the 503 responder, the watchers. Nothing here imports uvicorn or the app."""
