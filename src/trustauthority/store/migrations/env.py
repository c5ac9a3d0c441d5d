"""Alembic environment: migrations run on the connection `Database.upgrade` hands over."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context

from trustauthority.store.models import Base, UtcDateTime


def _render_item(kind: str, item: Any, _context: Any) -> str | Literal[False]:
    """Migrations name plain SQLAlchemy types, never the project's (they must not import it)."""
    if kind == "type" and isinstance(item, UtcDateTime):
        return "sa.DateTime()"
    return False


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through trustauthority.store.db.Database.upgrade")
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite", render_item=_render_item)
with context.begin_transaction():
    context.run_migrations()
