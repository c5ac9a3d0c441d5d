"""A consistent, database-neutral snapshot of every table, and loading one into an empty store.

The snapshot is read in one read-only transaction (a WAL snapshot on SQLite, REPEATABLE READ on
PostgreSQL), so it is consistent while the service keeps running. Rows are plain JSON values —
bytes as base64, datetimes as ISO 8601 — decoded on load by the column's type, so a snapshot of
SQLite loads into PostgreSQL and back. Loading requires the schema revision the snapshot was
taken at: the schema the rows fit.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Table, TypeDecorator, delete, func, insert, select, text
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError, StatementError

from trustauthority.errors import BackendUnavailable, BackupInvalid, Conflict
from trustauthority.store.db import Database
from trustauthority.store.models import AuditRecord, Base

Snapshot = dict[str, Any]
FORMAT = 1


def _encode(value: object) -> object:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _decoder(column: Column[Any]) -> Any:
    column_type = column.type
    if isinstance(column_type, TypeDecorator):  # UtcDateTime: decode as what it stores
        column_type = column_type.impl_instance
    try:
        kind = column_type.python_type
    except NotImplementedError:
        return None
    if kind is bytes:
        return lambda value: base64.b64decode(value, validate=True)
    if kind is datetime:
        return datetime.fromisoformat
    return None


def take_snapshot(db: Database) -> Snapshot:
    """Every row of every table, read in one transaction."""
    # a read-only transaction: the running service keeps writing while the rows are read
    with db.reading(consistent=True) as connection:
        if db.dialect == "sqlite":  # BEGIN is deferred: read once so the snapshot starts
            connection.execute(text("SELECT 1"))
        revision = MigrationContext.configure(connection).get_current_heads()
        if list(revision) != [db.schema_head()]:
            raise Conflict(f"the database is at schema {list(revision)}, this version "
                           f"expects {db.schema_head()}: start the service once to "
                           "upgrade it, then back up")
        tables: dict[str, Any] = {}
        for table in Base.metadata.sorted_tables:
            columns = [column.name for column in table.columns]
            ordered = select(table).order_by(*table.primary_key.columns)
            tables[table.name] = {
                "columns": columns,
                "rows": [[_encode(value) for value in row]
                         for row in connection.execute(ordered)]}
    return {"format": FORMAT, "revision": db.schema_head(), "dialect": db.dialect,
            "tables": tables}


def load_snapshot(db: Database, snapshot: Snapshot) -> dict[str, int]:
    """Create the schema and insert the snapshot's rows into an empty store, in one transaction;
    returns rows per table. A store that already holds data is refused."""
    if snapshot.get("format") != FORMAT or not isinstance(snapshot.get("tables"), dict):
        raise BackupInvalid("the backup's database snapshot is not in a format this version reads")
    db.upgrade()
    if snapshot.get("revision") != db.schema_head():
        raise Conflict(f"the backup was taken at schema {snapshot.get('revision')}, this version "
                       f"is at {db.schema_head()}: restore with the version that made it, then "
                       "upgrade")
    counts: dict[str, int] = {}
    try:
        with db.engine.begin() as connection:
            # `init` always writes the first audit entry: without one the store is unused
            if connection.scalar(select(func.count()).select_from(AuditRecord.__table__)):
                raise Conflict(f"the database {db.display_url} already holds a Trust Authority "
                               "store: restore into an empty one")
            for table in reversed(Base.metadata.sorted_tables):  # rows the migrations seeded
                connection.execute(delete(table))
            for table in Base.metadata.sorted_tables:
                counts[table.name] = _load_table(connection, table,
                                                 snapshot["tables"].get(table.name))
            if db.dialect == "postgresql":
                _advance_sequences(connection)
    except (OperationalError, InterfaceError) as error:  # the database, not the rows
        raise BackendUnavailable(
            f"loading the backup into {db.display_url}: {type(error).__name__}") from None
    except StatementError as error:  # a row the schema refuses: sealed, but not sound
        raise BackupInvalid(f"a row of the backup does not fit this version's schema "
                            f"({type(error.orig or error).__name__})") from None
    except SQLAlchemyError as error:
        raise BackendUnavailable(
            f"loading the backup into {db.display_url}: {type(error).__name__}") from None
    return counts


def _load_table(connection: Any, table: Table, data: object) -> int:
    if data is None:
        return 0
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise BackupInvalid(f"the backup's table {table.name} is malformed")
    names = data.get("columns")
    known = {column.name: column for column in table.columns}
    if not isinstance(names, list) or set(names) != set(known):
        raise BackupInvalid(f"the backup's table {table.name} has other columns than this version")
    decoders = [_decoder(known[name]) for name in names]
    rows = []
    for raw in data["rows"]:
        if not isinstance(raw, list) or len(raw) != len(names):
            raise BackupInvalid(f"a row of the backup's table {table.name} is malformed")
        try:
            rows.append({name: (decode(value) if decode is not None and value is not None
                                else value)
                         for name, decode, value in zip(names, decoders, raw, strict=True)})
        except (ValueError, TypeError, binascii.Error):
            raise BackupInvalid(f"a value in the backup's table {table.name} is malformed") \
                from None
    for start in range(0, len(rows), 500):
        connection.execute(insert(table), rows[start:start + 500])
    return len(rows)


def _advance_sequences(connection: Any) -> None:
    """Rows were inserted with their ids: move PostgreSQL's id sequences past them."""
    for table in Base.metadata.sorted_tables:
        for column in table.primary_key.columns:
            if column.autoincrement is True:
                highest = connection.scalar(select(func.max(column)))
                connection.execute(
                    text("SELECT setval(pg_get_serial_sequence(:table, :column), :next, false)"),
                    {"table": table.name, "column": column.name, "next": (highest or 0) + 1})
