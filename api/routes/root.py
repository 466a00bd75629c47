"""The seed's original routes, unchanged for existing clients; neither touches the DB."""
from fastapi import APIRouter

router = APIRouter()


@router.get("/")
def index() -> dict[str, str]:
    return {"message": "Hello from the API"}


@router.get("/test")
def test() -> dict[str, str]:
    return {"message": "test ok"}
