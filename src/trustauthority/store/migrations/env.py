"""Alembic environment: migrations run on the connection `Database.upgrade` hands over."""

from __future__ import annotations

from alembic import context

from trustauthority.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through trustauthority.store.db.Database.upgrade")
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
