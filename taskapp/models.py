"""The tables: tasks, keyed by owner first, their tags, and what serves them (idempotency
keys, the change feed's counters and tombstones)."""

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKeyConstraint,
    Index,
    SmallInteger,
    String,
    Text,
    Uuid,
    delete,
    event,
    insert,
    text,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapped, Session, UOWTransaction, attributes, mapped_column

from taskapp.extensions import db
from taskapp.timestamps import UTCDateTime, utcnow

TITLE_MAX = 255
DESCRIPTION_MAX = 10_000
USER_ID_MAX = 255
PRIORITY_MIN, PRIORITY_MAX = 1, 5
IDEMPOTENCY_KEY_MAX = 255
FIRST_VERSION = 1
TAG_MAX = 50
TAGS_MAX = 20
# A tag's key is its str.casefold(), which can be longer than the tag: at most three
# characters for one ("ΐ" folds to three).
TAG_KEY_MAX = 3 * TAG_MAX


if TYPE_CHECKING:
    # db.Model is made at run time from this declarative base, which mypy can follow.
    from taskapp.extensions import Base as Model
else:
    Model = db.Model


def _same_as_created_at(context: DefaultExecutionContext) -> datetime:
    # A new task's updated_at is exactly its created_at, not a microsecond later.
    parameters = context.get_current_parameters()  # type: ignore[no-untyped-call]  # unannotated
    created_at: datetime = parameters["created_at"]
    return created_at


class Task(Model):
    """A user's task.

    The primary key is (user_id, id): the owner is part of every row's identity,
    so no query can load a task by id alone, and the table can be distributed by
    user_id (Citus) without changing a key.
    """

    __tablename__ = "tasks"

    user_id: Mapped[str] = mapped_column(String(USER_ID_MAX), primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(String(TITLE_MAX))
    description: Mapped[Optional[str]] = mapped_column(Text)
    is_completed: Mapped[bool] = mapped_column(default=False)
    priority: Mapped[int] = mapped_column(SmallInteger, default=PRIORITY_MIN)
    completed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    due_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=_same_as_created_at, onupdate=utcnow
    )
    # Bumped on every UPDATE by SQLAlchemy itself; the ETag is made from it, and a
    # write that lost a race to another one fails instead of overwriting it.
    version: Mapped[int] = mapped_column(default=FIRST_VERSION)
    # In the order given, as given (trimmed). Kept on the row so every read of a task
    # stays one table; task_tags (TaskTag) indexes them for the `tag` filter and counts.
    tags: Mapped[list[str]] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    # The user's change sequence number of the task's last write, stamped on every
    # insert and update by taskapp.tasks.changes (the change feed); never NULL, so a
    # write that bypassed the stamping fails instead of going missing from the feed.
    change_seq: Mapped[int] = mapped_column(BigInteger)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        CheckConstraint(
            f"priority BETWEEN {PRIORITY_MIN} AND {PRIORITY_MAX}", name="priority_range"
        ),
    )

    def set_completed(self, completed: bool, at: datetime | None = None) -> None:
        """Mark done or reopened at `at` (default now); a repeat changes nothing.

        `completed_at` and `updated_at` get the same moment, the moment of the change.
        """
        if completed == self.is_completed:
            return
        now = at or utcnow()
        self.is_completed = completed
        self.completed_at = now if completed else None
        self.updated_at = now


class TaskTag(Model):
    """One tag of one task, by its key (the casefolded tag): what the `tag` filter and
    `GET /tags` read. Written with the task, in its transaction (`_keep_task_tags_in_step`).
    """

    __tablename__ = "task_tags"

    user_id: Mapped[str] = mapped_column(String(USER_ID_MAX), primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tag_key: Mapped[str] = mapped_column(String(TAG_KEY_MAX), primary_key=True)
    name: Mapped[str] = mapped_column(String(TAG_MAX))  # the tag as this task spells it

    __table_args__ = (
        ForeignKeyConstraint(
            ["user_id", "task_id"], ["tasks.user_id", "tasks.id"], ondelete="CASCADE"
        ),
    )


def tag_key(tag: str) -> str:
    """What makes two tags the same tag: "Work", "work" and "WORK" are one."""
    return tag.casefold()


@event.listens_for(Session, "after_flush")
def _keep_task_tags_in_step(session: Session, _flush: UOWTransaction) -> None:
    """Rewrite the task_tags rows of every task this flush inserted, deleted or changed
    the tags of, on the flush's connection, so they commit or roll back with the task.

    The foreign key's ON DELETE CASCADE removes them on PostgreSQL; SQLite does not
    enforce foreign keys here (turning them on would let a batch migration, which drops
    and recreates `tasks`, empty task_tags), so deleted tasks' rows are deleted here too.
    Bulk DELETEs bypass the ORM and are left to the cascade.
    """
    stale: list[Task] = [task for task in session.deleted if isinstance(task, Task)]
    changed: list[Task] = [task for task in session.new if isinstance(task, Task)]
    for task in session.dirty:
        if isinstance(task, Task) and attributes.get_history(task, "tags").has_changes():
            stale.append(task)
            changed.append(task)
    if not stale and not changed:
        return
    connection = session.connection()
    for task in stale:
        connection.execute(
            delete(TaskTag).where(TaskTag.user_id == task.user_id, TaskTag.task_id == task.id)
        )
    rows = [
        {"user_id": task.user_id, "task_id": task.id, "tag_key": tag_key(name), "name": name}
        for task in changed
        if task not in session.deleted
        for name in task.tags or ()
    ]
    if rows:
        connection.execute(insert(TaskTag), rows)


class IdempotencyKey(Model):
    """A POST's Idempotency-Key, and the 201 it was answered with, for 24 hours.

    Written in the same transaction as the task it created; the primary key
    (user_id, key) is what stops two concurrent requests with one key from both
    creating a task.
    """

    __tablename__ = "idempotency_keys"

    user_id: Mapped[str] = mapped_column(String(USER_ID_MAX), primary_key=True)
    key: Mapped[str] = mapped_column(String(IDEMPOTENCY_KEY_MAX), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    response: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class ChangeCounter(Model):
    """Per user: the last change sequence number given out, and the highest one whose
    tombstone was purged (a feed token below it is too old to be complete).

    Every write of a user's tasks updates this row in its own transaction, so the row
    lock orders the user's writes: sequence order is commit order (taskapp.tasks.changes).
    """

    __tablename__ = "change_counters"

    user_id: Mapped[str] = mapped_column(String(USER_ID_MAX), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    purged_seq: Mapped[int] = mapped_column(BigInteger)


class TaskTombstone(Model):
    """A deleted task, for the change feed, until it is older than TOMBSTONE_DAYS."""

    __tablename__ = "task_tombstones"

    user_id: Mapped[str] = mapped_column(String(USER_ID_MAX), primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


# One index per sort order of the list, each led by the owner, so every page,
# first or deep, filtered or not, is a range scan of one user's entries.
Index("ix_tasks_user_id_created_at_id", Task.user_id, Task.created_at.desc(), Task.id.desc())
Index("ix_tasks_user_id_updated_at_id", Task.user_id, Task.updated_at.desc(), Task.id.desc())
Index("ix_tasks_user_id_priority_id", Task.user_id, Task.priority.desc(), Task.id.desc())
Index("ix_tasks_user_id_title_id", Task.user_id, Task.title, Task.id)
# The `tag` filter and the tag counts: one user's tasks carrying a tag.
Index("ix_task_tags_user_id_tag_key", TaskTag.user_id, TaskTag.tag_key)
# Serves due_at and -due_at, tasks without a due date last in both: the list reads the
# dated tasks and the undated ones as two runs of this index, each in one direction
# (taskapp.tasks.listing), so no NULLS LAST ordering is needed in the index itself.
Index("ix_tasks_user_id_due_at_id", Task.user_id, Task.due_at, Task.id)
# The change feed reads one user's changes after a sequence number, in order.
Index("ix_tasks_user_id_change_seq", Task.user_id, Task.change_seq, unique=True)
Index("ix_task_tombstones_user_id_seq", TaskTombstone.user_id, TaskTombstone.seq, unique=True)
# On PostgreSQL, migration 0003 adds pg_trgm GIN indexes on title and description
# for `q`; they are not declared here because SQLite has no equivalent.
