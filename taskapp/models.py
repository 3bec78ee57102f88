"""The tables: tasks, keyed by owner first, and what serves them (idempotency keys, the
change feed's counters and tombstones)."""

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Optional

from sqlalchemy import BigInteger, CheckConstraint, Index, SmallInteger, String, Text, Uuid
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapped, mapped_column

from taskapp.extensions import db
from taskapp.timestamps import UTCDateTime, utcnow

TITLE_MAX = 255
DESCRIPTION_MAX = 10_000
USER_ID_MAX = 255
PRIORITY_MIN, PRIORITY_MAX = 1, 5
IDEMPOTENCY_KEY_MAX = 255
FIRST_VERSION = 1


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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=_same_as_created_at, onupdate=utcnow
    )
    # Bumped on every UPDATE by SQLAlchemy itself; the ETag is made from it, and a
    # write that lost a race to another one fails instead of overwriting it.
    version: Mapped[int] = mapped_column(default=FIRST_VERSION)
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
# The change feed reads one user's changes after a sequence number, in order.
Index("ix_tasks_user_id_change_seq", Task.user_id, Task.change_seq, unique=True)
Index("ix_task_tombstones_user_id_seq", TaskTombstone.user_id, TaskTombstone.seq, unique=True)
# On PostgreSQL, migration 0003 adds pg_trgm GIN indexes on title and description
# for `q`; they are not declared here because SQLite has no equivalent.
