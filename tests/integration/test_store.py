"""The store on SQLite and PostgreSQL: migrations make exactly the models' schema, concurrent
writers keep one audit chain, SQLite runs in WAL mode, and service keys rest sealed."""

from __future__ import annotations

import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, event, insert, inspect, select, text

from trustauthority.audit.chain import GENESIS_HASH
from trustauthority.errors import BackendUnavailable, ConfigError
from trustauthority.service.keys import KeyPurpose, ServiceKeys, key_id
from trustauthority.service.platform import Platform, utc_now
from trustauthority.service.setup import initialise
from trustauthority.store.db import Database, sqlite_url
from trustauthority.store.masterkey import (
    KEY_BYTES,
    AesGcmMasterKey,
    create_master_key_file,
    load_master_key_file,
)
from trustauthority.store.models import AuditRecord, Base, Setting

THREADS = 4
PER_THREAD = 25


def _url(database_url: str | None, tmp_path: Path) -> str:
    return database_url or sqlite_url(tmp_path / "store.db")


def _schema(connection: Connection) -> dict[str, Any]:
    """Tables with their columns, keys, indexes and constraints, as the database reports them."""
    inspector = inspect(connection)
    return {
        table: {
            "columns": [(column["name"], str(column["type"]), column["nullable"])
                        for column in inspector.get_columns(table)],
            "primary_key": inspector.get_pk_constraint(table),
            "foreign_keys": inspector.get_foreign_keys(table),
            "indexes": sorted((index["name"] or "", tuple(index["column_names"]),
                               index["unique"]) for index in inspector.get_indexes(table)),
            "unique": sorted((unique["name"] or "", tuple(unique["column_names"]))
                             for unique in inspector.get_unique_constraints(table)),
        }
        for table in sorted(inspector.get_table_names())
    }


# -- migrations -----------------------------------------------------------------------------------

def test_upgrade_creates_exactly_the_models_schema(database_url: str | None,
                                                   tmp_path: Path) -> None:
    db = Database(_url(database_url, tmp_path))
    try:
        with db.engine.connect() as connection:
            assert inspect(connection).get_table_names() == []
        assert not db.schema_is_current()
        db.upgrade()
        assert db.schema_is_current()
        with db.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
            tables = set(inspect(connection).get_table_names())
            head = connection.execute(text("SELECT id, sequence, entry_hash FROM audit_head")
                                      ).all()
        assert differences == [], differences
        assert tables == set(Base.metadata.tables) | {"alembic_version"}
        # the migration starts the empty chain
        assert [tuple(row) for row in head] == [(1, -1, GENESIS_HASH)]

        # the comparison is not blind: a missing index is reported
        with db.engine.begin() as connection:
            connection.execute(text("DROP INDEX ix_audit_log_time"))
        with db.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert [difference[0] for difference in differences] == ["add_index"]
    finally:
        db.dispose()


def test_upgrading_twice_changes_nothing(database_url: str | None, tmp_path: Path) -> None:
    db = Database(_url(database_url, tmp_path))
    try:
        db.upgrade()
        with db.session() as session:
            session.add(Setting(key="kept", value='"across upgrades"'))
        with db.engine.connect() as connection:
            before = _schema(connection)
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        db.upgrade()
        assert db.schema_is_current()
        with db.engine.connect() as connection:
            assert _schema(connection) == before
            assert connection.execute(text("SELECT version_num FROM alembic_version")
                                      ).all() == versions
            assert connection.execute(text("SELECT count(*) FROM audit_head")).scalar() == 1
        with db.session(read_only=True) as session:
            assert session.get(Setting, "kept") is not None
        assert len(versions) == 1
    finally:
        db.dispose()


# -- the audit chain under concurrent writers -----------------------------------------------------

def test_concurrent_appends_make_one_unbroken_chain(database_url: str | None,
                                                    tmp_path: Path) -> None:
    db = Database(_url(database_url, tmp_path))
    db.upgrade()
    platform = Platform(db, create_master_key_file(tmp_path / "master.key"),
                        audit_checkpoint_interval=10)
    with db.session() as session:
        platform.keys.create(session, KeyPurpose.AUDIT)
    start = threading.Barrier(THREADS)

    def append(worker: int) -> list[int]:
        start.wait(timeout=60)  # every writer starts at once
        sequences = []
        for index in range(PER_THREAD):
            with db.session() as session:
                entry = platform.audit.record(
                    session, principal=f"writer-{worker}", role="test", action="test.append",
                    target=f"{worker}/{index}", outcome="success",
                    request_id=f"req-{worker}-{index}",
                    details={"worker": worker, "index": index})
            sequences.append(entry.sequence)
        return sequences

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(append, worker) for worker in range(THREADS)]
            returned = [future.result(timeout=120) for future in futures]
        total = THREADS * PER_THREAD
        with db.session(read_only=True) as session:
            verification = platform.audit.verify(session)
            entries = list(platform.audit.export(session))
            stored = list(session.scalars(select(AuditRecord.sequence)))
        assert verification.entries == total
        assert verification.head_sequence == total - 1
        assert verification.checkpoints == total // 10
        assert [entry.sequence for entry in entries] == list(range(total))
        assert sorted(stored) == list(range(total))
        # every record is there once, and each writer's records are in its own order
        written = [(entry.details["worker"], entry.details["index"]) for entry in entries]
        assert sorted(written) == [(w, i) for w in range(THREADS) for i in range(PER_THREAD)]
        for worker in range(THREADS):
            mine = [index for w, index in written if w == worker]
            assert mine == list(range(PER_THREAD))
        # the sequences the writers were given are exactly the ones stored
        assert sorted(s for sequences in returned for s in sequences) == list(range(total))
    finally:
        db.dispose()


# -- SQLite ---------------------------------------------------------------------------------------

def test_sqlite_runs_in_wal_mode_with_its_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = Database(sqlite_url(path))
    try:
        db.upgrade()
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 15000
    finally:
        db.dispose()
    # WAL is a property of the file: any other connection finds it
    with closing(sqlite3.connect(path)) as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_readers_do_not_block_the_writer(tmp_path: Path) -> None:
    """With WAL a long read transaction keeps its snapshot and a writer commits beside it
    (with a rollback journal the commit would wait out the busy timeout and fail)."""
    db = Database(sqlite_url(tmp_path / "store.db"))
    try:
        db.upgrade()
        with db.session(read_only=True) as reader:
            assert reader.get(Setting, "late") is None  # the read snapshot starts here
            with db.session() as writer:
                writer.add(Setting(key="late", value="1"))
            assert reader.get(Setting, "late") is None
        with db.session(read_only=True) as reader:
            assert reader.get(Setting, "late") is not None
    finally:
        db.dispose()


def test_a_write_lock_held_past_the_busy_timeout_is_a_backend_error(tmp_path: Path) -> None:
    """Another process holding SQLite's write lock longer than the busy timeout: BEGIN fails,
    and both write paths say so as BackendUnavailable (a 503 in the API), not a raw
    sqlite3 error (a 500). Reads go on beside it (WAL)."""
    path = tmp_path / "store.db"
    db = Database(sqlite_url(path))
    try:
        db.upgrade()

        @event.listens_for(db.engine, "connect")
        def _short_timeout(connection: Any, _record: Any) -> None:
            connection.execute("PRAGMA busy_timeout=50")  # not 15 s: the test waits it out

        db.engine.dispose()  # connections made before the listener keep the long timeout
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            try:
                with pytest.raises(BackendUnavailable, match="OperationalError"), \
                        db.writing() as connection:
                    connection.execute(text("SELECT 1"))
                with pytest.raises(BackendUnavailable, match="OperationalError"), \
                        db.session() as session:
                    session.add(Setting(key="blocked", value="1"))
                with db.reading() as connection:
                    assert connection.execute(select(Setting.key)).all() is not None
            finally:
                other.execute("ROLLBACK")
        with db.writing() as connection:  # the lock gone, writing works again
            connection.execute(insert(Setting).values(key="after", value="1"))
        with db.session(read_only=True) as reader:
            assert reader.get(Setting, "after") is not None
            assert reader.get(Setting, "blocked") is None
    finally:
        db.dispose()


# -- service keys at rest -------------------------------------------------------------------------

def _initialised(database_url: str | None, tmp_path: Path) -> tuple[Database, Path]:
    data_dir = tmp_path / "data"
    initialise(data_dir, database_url=database_url)
    return Database(database_url or sqlite_url(data_dir / "trustauthority.db")), data_dir


def test_service_keys_are_stored_sealed(database_url: str | None, tmp_path: Path) -> None:
    db, data_dir = _initialised(database_url, tmp_path)
    try:
        with db.engine.connect() as connection:
            rows = connection.execute(text("SELECT kid, purpose, private_sealed "
                                           "FROM service_keys")).all()
        sealed = {str(kid): bytes(blob) for kid, _purpose, blob in rows}
        assert sorted(str(purpose) for _kid, purpose, _blob in rows) == sorted(KeyPurpose)
        for blob in sealed.values():
            with pytest.raises(ValueError, match="Could not deserialize key data"):
                serialization.load_der_private_key(blob, password=None)
            with pytest.raises(ValueError, match="Unable to load PEM"):
                serialization.load_pem_private_key(blob, password=None)
            assert b"PRIVATE KEY" not in blob

        keys = ServiceKeys(load_master_key_file(data_dir / "master.key"), utc_now)
        with db.session(read_only=True) as session:
            for purpose in KeyPurpose:
                kid, private = keys.signer(session, purpose)
                assert key_id(private.public_key()) == kid  # the pair of the stored public key
                der = private.private_bytes(serialization.Encoding.DER,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
                scalar = private.private_numbers().private_value.to_bytes(32, "big")
                assert der not in sealed[kid]
                assert scalar not in sealed[kid]

        stranger = ServiceKeys(AesGcmMasterKey(os.urandom(KEY_BYTES)), utc_now)
        with db.session(read_only=True) as session:
            for purpose in KeyPurpose:
                with pytest.raises(ConfigError, match="another master key"):
                    stranger.signer(session, purpose)
    finally:
        db.dispose()


def test_a_sealed_key_moved_to_another_row_does_not_open(database_url: str | None,
                                                         tmp_path: Path) -> None:
    db, data_dir = _initialised(database_url, tmp_path)
    try:
        with db.engine.begin() as connection:
            rows: dict[str, bytes] = {
                str(purpose): bytes(blob) for purpose, blob in connection.execute(text(
                    "SELECT purpose, private_sealed FROM service_keys"))}
            connection.execute(text("UPDATE service_keys SET private_sealed = :blob "
                                    "WHERE purpose = :purpose"),
                               {"blob": rows[KeyPurpose.TLS_CA.value],
                                "purpose": KeyPurpose.AUDIT.value})
        keys = ServiceKeys(load_master_key_file(data_dir / "master.key"), utc_now)
        with db.session(read_only=True) as session:
            with pytest.raises(ConfigError, match="does not open"):
                keys.signer(session, KeyPurpose.AUDIT)
            keys.signer(session, KeyPurpose.TLS_CA)  # the untouched row still opens
    finally:
        db.dispose()
