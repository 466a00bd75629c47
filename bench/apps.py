"""The real API plus /bench/slow/S, a request that takes S seconds (for the clean-stop figure)."""

from __future__ import annotations

import asyncio

from api.main import create_app

app = create_app()


@app.get("/bench/slow/{seconds}")
async def slow(seconds: float) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}
