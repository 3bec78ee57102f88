"""list indexes: one per sort order, each led by user_id

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tasks_user_id_priority_id",
            ["user_id", sa.literal_column("priority DESC"), sa.literal_column("id DESC")],
            unique=False,
        )
        batch_op.create_index("ix_tasks_user_id_title_id", ["user_id", "title", "id"], unique=False)
        batch_op.create_index(
            "ix_tasks_user_id_updated_at_id",
            ["user_id", sa.literal_column("updated_at DESC"), sa.literal_column("id DESC")],
            unique=False,
        )


def downgrade():
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_user_id_updated_at_id")
        batch_op.drop_index("ix_tasks_user_id_title_id")
        batch_op.drop_index("ix_tasks_user_id_priority_id")
