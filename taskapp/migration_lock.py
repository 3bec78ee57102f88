"""Migrations one at a time: hosts that run `flask db upgrade` at once take turns.

migrations/env.py calls `hold_migration_lock` first thing in the transaction that
migrates. On PostgreSQL the second host then waits until the first has committed,
finds the schema current, and changes nothing; without the lock both would create
the same tables, and one would fail half-way (duplicate table, or a second row in
alembic_version).

A transaction-level advisory lock (`pg_advisory_xact_lock`), not a session one:
it ends with the transaction, committed or rolled back, so there is no unlock to
forget. Alembic runs a whole upgrade in one transaction on PostgreSQL, and behind
PgBouncer in transaction pooling that transaction keeps one server connection,
whereas a session lock could be taken on one server connection, "released" on
another, and stay held for whoever gets the first one next.

SQLite has no such lock and needs none: one file, one writer at a time.
"""

from sqlalchemy import Connection, text

# Any fixed 64-bit number, the same on every host: "taskapp" in ASCII. An operator
# sees it in pg_locks (objid holds its low 32 bits) while a migration runs or waits.
MIGRATION_LOCK_KEY = int.from_bytes(b"taskapp", "big")


def hold_migration_lock(connection: Connection) -> None:
    """Wait for the migration lock; it is held until `connection`'s transaction ends."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
