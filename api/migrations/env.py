"""Alembic environment: online migrations against the MYSQL_* database, bounded by timeouts."""

from alembic import context

from api.db import make_engine
from api.models import Base
from api.settings import Settings

engine = make_engine(Settings.from_env())
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
