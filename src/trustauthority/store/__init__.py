"""The config store: SQLAlchemy 2 models, repositories and Alembic migrations.

SQLite (one file, WAL mode) by default; PostgreSQL by URL for several replicas. Everything that
must survive a restart lives here, secrets only sealed under the service master key.
"""
