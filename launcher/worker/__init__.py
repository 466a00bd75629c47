"""What runs in the app's own processes, the template and the workers: uvicorn and the app.
The launcher never imports this package; it starts it with `python -m launcher.worker...`."""
