"""Alembic environment: runs on the connection ``storage.db.migrate`` hands over."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    from storage.db import get_engine

    connection = get_engine().connect()

context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
