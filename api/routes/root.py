"""The service's original routes, with the very bodies its author's main.py answered; neither touches the DB."""

from fastapi import APIRouter

router = APIRouter()


@router.get("/")
def health_check() -> dict[str, str]:
    return {"status": "ok", "message": "FastAPI is running"}


@router.get("/test")
def api_test() -> dict[str, str]:
    return {"status": "ok", "message": "API test endpoint"}
