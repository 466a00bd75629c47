"""Liveness (is this process able to answer?) and health (can it reach its database?)."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from api.db import error_class

router = APIRouter()


@router.get("/live")
def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/health")
def health(request: Request) -> JSONResponse:
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as err:
        return JSONResponse({"status": "unavailable", "db": error_class(err)}, status_code=503)
    return JSONResponse({"status": "ok", "db": "ok"})
