"""search: trigram indexes for q on PostgreSQL

`q` is a case-insensitive substring match (ILIKE '%text%'), which no btree can
serve. On PostgreSQL, pg_trgm's GIN indexes can, and the planner combines them
with the (user_id, ...) indexes for users with many tasks. SQLite has no such
index; there the per-user indexes bound the scan to one user's tasks.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TRIGRAM_INDEXES = {"ix_tasks_title_trgm": "title", "ix_tasks_description_trgm": "description"}


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    # The operator class lives in the extension's schema, which need not be on
    # the search path (an extension already installed elsewhere in the database).
    schema = op.get_bind().scalar(
        sa.text("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'")
    )
    for name, column in TRIGRAM_INDEXES.items():
        op.create_index(
            name,
            "tasks",
            [column],
            postgresql_using="gin",
            postgresql_ops={column: f"{schema}.gin_trgm_ops"},
        )


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in TRIGRAM_INDEXES:
        op.drop_index(name, table_name="tasks")
