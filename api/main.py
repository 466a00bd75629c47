"""The application factory. Nothing here touches the database at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import sessionmaker

from api.db import error_class, make_engine
from api.request_id import RequestIdMiddleware, configure_logging
from api.routes import health, notes, root
from api.settings import Settings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = make_engine(Settings.from_env())
    app.state.engine = engine
    app.state.sessions = sessionmaker(engine, expire_on_commit=False)
    yield
    engine.dispose()


async def database_unavailable(request: Request, err: Exception) -> JSONResponse:
    """A lost or frozen DB is a fast, honest 503, never a stack trace or a hang."""
    assert isinstance(err, DBAPIError)
    return JSONResponse(
        {"detail": "database unavailable", "db": error_class(err)}, status_code=503, headers={"Retry-After": "1"}
    )


def create_app() -> FastAPI:
    configure_logging()
    app = FastAPI(title="Hexsera API", version="1.0.0", lifespan=lifespan)
    for router in (root.router, health.router, notes.router):
        app.include_router(router, prefix="/api")
    app.add_exception_handler(DBAPIError, database_unavailable)
    app.add_middleware(RequestIdMiddleware)
    return app


app = create_app()
