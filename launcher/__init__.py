"""launcher: a supervisor that serves an ASGI app with a pool of uvicorn workers and brings
it back by itself when MySQL or a worker goes away."""

__version__ = "0.3.0"
