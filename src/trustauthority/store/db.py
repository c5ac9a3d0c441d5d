"""Opening the store: engine, sessions, migrations, readiness.

SQLite gets WAL (readers never wait for the writer), foreign keys, a busy timeout, and
`BEGIN IMMEDIATE` transactions: a transaction that reads and then writes (the audit chain's head)
takes the write lock up front instead of failing half-way with "database is locked".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from trustauthority.errors import BackendUnavailable, ConfigError, Conflict, UsageError

MIGRATIONS = Path(__file__).parent / "migrations"

#: what a helper of the hot paths takes: an ORM session or a bare connection (`reading`,
#: `writing`). Such helpers run Core statements only, which both execute the same way.
Transaction = Session | Connection


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling is switched off so that we issue BEGIN ourselves
        connection.isolation_level = None
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # readers take no lock up front (WAL lets them read beside the writer). Through
        # SQLAlchemy, not straight to the driver: a BEGIN that fails (the lock held past the
        # busy timeout by another process) must be a SQLAlchemy error, which `_errors_mapped`
        # turns into BackendUnavailable (503).
        read_only = connection.get_execution_options().get("ta_read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class Database:
    """One engine and its session factory."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ConfigError(f"not a database URL: {url!r}") from None
        self.url = url
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        try:
            # a server's connections can drop (restart, failover, idle timeout): test each one
            # as it leaves the pool; a SQLite file has nothing to drop
            self.engine = create_engine(url, echo=echo,
                                        pool_pre_ping=self.dialect == "postgresql")
        except (ArgumentError, ImportError) as error:
            raise ConfigError(f"cannot use database {parsed.render_as_string()}: {error}") from None
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        self._read_engine = self.engine.execution_options(ta_read_only=True)
        # SQLite has one writer at a time, and a writer that finds the lock taken sleeps in
        # SQLite's busy handler for 1, 2, 5, 10… ms before it looks again, however soon the
        # lock was freed. Threads of one process queue here instead and go the moment it is
        # free; other processes still meet the busy handler. Re-entrant, so a nested write
        # fails as it did before (on SQLite's own lock) instead of waiting for itself.
        self._writer = threading.RLock() if self.dialect == "sqlite" else None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(self._read_engine, expire_on_commit=False)

    @property
    def sqlite_file(self) -> Path | None:
        """The database file, for SQLite (None for PostgreSQL or an in-memory SQLite)."""
        name = make_url(self.url).database
        if self.dialect != "sqlite" or name in (None, "", ":memory:"):
            return None
        return Path(name)

    @staticmethod
    def hide_password(url: str) -> str:
        return make_url(url).render_as_string(hide_password=True)

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, for logs and errors."""
        return self.hide_password(self.url)

    @contextmanager
    def session(self, *, read_only: bool = False) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back when it raises.

        `read_only` transactions take no write lock on SQLite, for reads that may be long
        (exports, verification); on PostgreSQL every transaction is the same.
        """
        factory = self._readers if read_only else self._sessions
        queue = nullcontext() if read_only else self._writer_queue()
        with queue, self._errors_mapped(), factory.begin() as session:
            yield session

    @contextmanager
    def reading(self, *, consistent: bool = False) -> Iterator[Connection]:
        """A read-only transaction on a bare connection, for hot reads written as SQLAlchemy
        Core statements (no ORM unit of work to set up and tear down).

        `consistent`: every statement sees the same moment (REPEATABLE READ on PostgreSQL; a
        SQLite read transaction is one WAL snapshot already), for reads of many tables.
        """
        with self._errors_mapped(), self._read_engine.connect() as connection:
            if consistent and self.dialect == "postgresql":
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                yield connection

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """The write transaction `session()` opens (the writer queue, `BEGIN IMMEDIATE` on
        SQLite, errors mapped; committed when the block ends, rolled back when it raises), on
        a bare connection: for hot paths written as Core statements. On the benchmark machine
        an ORM session cost ~270 µs per transaction and ~117 µs per statement more than the
        database work; a bare connection ~135 and ~44."""
        with self._writer_queue(), self._errors_mapped(), self.engine.connect() as connection, \
                connection.begin():
            yield connection

    def _writer_queue(self) -> AbstractContextManager[object]:
        """What a write transaction waits in first: the writer lock on SQLite (see __init__)."""
        return self._writer if self._writer is not None else nullcontext()

    @contextmanager
    def _errors_mapped(self) -> Iterator[None]:
        try:
            yield
        except DataError as error:
            # a value the database cannot hold (PostgreSQL text refuses NUL): the caller's fault
            raise UsageError("a value in the request cannot be stored (control characters such "
                             "as NUL are refused)") from error
        except IntegrityError as error:
            # two writers raced for the same name or key: the loser's change is refused whole
            raise Conflict("the change conflicts with one made at the same time; "
                           "retry") from error
        except SQLAlchemyError as error:
            raise BackendUnavailable(
                f"database {self.display_url}: {type(error).__name__}") from error

    def ping(self) -> None:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as error:
            raise BackendUnavailable(
                f"database {self.display_url} unreachable: {type(error).__name__}") from None

    def _alembic(self, connection: Any) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        return config

    def upgrade(self) -> None:
        """Apply every migration not yet applied (what `init` and an upgrade run)."""
        try:
            with self.engine.begin() as connection:
                command.upgrade(self._alembic(connection), "head")
        except SQLAlchemyError as error:
            raise BackendUnavailable(
                f"cannot migrate {self.display_url}: {type(error).__name__}: {error}") from None

    def schema_head(self) -> str:
        """The revision this version of the code migrates to."""
        return str(ScriptDirectory.from_config(self._alembic(None)).get_current_head())

    def schema_is_current(self) -> bool:
        script = ScriptDirectory.from_config(self._alembic(None))
        with self.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_heads()
        return set(current) == set(script.get_heads())

    def dispose(self) -> None:
        self.engine.dispose()
