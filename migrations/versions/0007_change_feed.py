"""change feed: a per-user sequence number on every write, and tombstones of deletions

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26

"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Existing tasks are numbered per user in the order they were last changed, and each
# user's counter starts at the last of those numbers: a client's first sync (from
# nothing) gets every task, and later writes are numbered after them.
NUMBER_EXISTING_TASKS = """
UPDATE tasks SET change_seq = numbered.seq
FROM (
    SELECT user_id, id, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY updated_at, id) AS seq
    FROM tasks
) AS numbered
WHERE numbered.user_id = tasks.user_id AND numbered.id = tasks.id
"""
START_COUNTERS = """
INSERT INTO change_counters (user_id, last_seq, purged_seq)
SELECT user_id, MAX(change_seq), 0 FROM tasks GROUP BY user_id
"""


def upgrade():
    op.create_table(
        "change_counters",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("purged_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_change_counters")),
    )
    op.create_table(
        "task_tombstones",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "task_id", name=op.f("pk_task_tombstones")),
    )
    with op.batch_alter_table("task_tombstones", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_task_tombstones_deleted_at"), ["deleted_at"], unique=False
        )
        batch_op.create_index("ix_task_tombstones_user_id_seq", ["user_id", "seq"], unique=True)

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("change_seq", sa.BigInteger(), nullable=True))
    op.execute(NUMBER_EXISTING_TASKS)
    op.execute(START_COUNTERS)
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.alter_column("change_seq", existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_index("ix_tasks_user_id_change_seq", ["user_id", "change_seq"], unique=True)


def downgrade():
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_user_id_change_seq")
        batch_op.drop_column("change_seq")
    with op.batch_alter_table("task_tombstones", schema=None) as batch_op:
        batch_op.drop_index("ix_task_tombstones_user_id_seq")
        batch_op.drop_index(batch_op.f("ix_task_tombstones_deleted_at"))
    op.drop_table("task_tombstones")
    op.drop_table("change_counters")
