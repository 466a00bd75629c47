"""A real write path: a note's id is returned only after its commit."""

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from api.db import session
from api.models import Note

router = APIRouter(prefix="/notes")
log = logging.getLogger("api.notes")
Db = Annotated[Session, Depends(session)]


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=1000)


class NoteOut(BaseModel):
    id: int
    text: str


@router.post("", status_code=201)
def create(note: NoteIn, db: Db) -> NoteOut:
    row = Note(text=note.text)
    db.add(row)
    db.commit()
    log.info("note %d written", row.id)
    return NoteOut(id=row.id, text=row.text)


@router.get("/{note_id}")
def read(note_id: int, db: Db) -> NoteOut:
    row = db.get(Note, note_id)
    if row is None:
        raise HTTPException(status_code=404, detail="note not found")
    return NoteOut(id=row.id, text=row.text)
