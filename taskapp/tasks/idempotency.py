"""Create a task at most once per Idempotency-Key: a retried POST gets the first answer.

`create` serves every POST. Without a key it inserts the task. With one, one
transaction writes the key and the task together, key first. The key's primary
key (user_id, key) is the guard: a concurrent request with the same key waits on
it (PostgreSQL) and then finds the first one's answer, or, when the first is still
running after `IN_FLIGHT_WAIT_MS`, gets 409. A failure anywhere rolls back both,
so no key ever points at a task that does not exist.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from flask_smorest import abort
from sqlalchemy import CursorResult, delete, text
from sqlalchemy.exc import IntegrityError, OperationalError

from taskapp.extensions import db
from taskapp.models import IDEMPOTENCY_KEY_MAX, IdempotencyKey, Task
from taskapp.timestamps import utcnow

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEEP_FOR = timedelta(hours=24)
IN_FLIGHT_WAIT_MS = 1000
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE when lock_timeout expires
VALID_KEY = re.compile(rf"[\x20-\x7e]{{1,{IDEMPOTENCY_KEY_MAX}}}")


@dataclass(frozen=True)
class Created:
    task_id: uuid.UUID
    body: str  # the JSON of the 201, exactly as first sent
    replayed: bool | None  # None: the request had no key

    @property
    def headers(self) -> dict[str, str]:
        if self.replayed is None:
            return {}
        return {REPLAYED_HEADER: "true" if self.replayed else "false"}


def create(
    user_id: str, header_value: str | None, fields: dict[str, Any], task: Task, body: str
) -> Created:
    """Insert `task`, answered with `body`; with an Idempotency-Key, at most once per key."""
    key = key_from(header_value)
    if key is None:
        db.session.add(task)
        db.session.commit()
        return Created(task.id, body, replayed=None)
    return create_once(user_id, key, fields, task, body)


def key_from(header_value: str | None) -> str | None:
    """The request's Idempotency-Key, None without one, 422 when it is malformed."""
    if header_value is None:
        return None
    if not VALID_KEY.fullmatch(header_value):
        abort(
            422,
            messages={
                "headers": {
                    HEADER: [f"Must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters."]
                }
            },
        )
    return header_value


def fingerprint(fields: dict[str, Any]) -> str:
    """The same body, however it is spaced or ordered, has the same fingerprint."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_once(user_id: str, key: str, fields: dict[str, Any], task: Task, body: str) -> Created:
    """Insert `task` under `key`, or answer with what the key's first request created."""
    digest = fingerprint(fields)
    earlier = _earlier_answer(user_id, key, digest)
    if earlier:
        return earlier
    try:
        if db.session.get_bind().dialect.name == "postgresql":
            db.session.execute(text(f"SET LOCAL lock_timeout = '{IN_FLIGHT_WAIT_MS}ms'"))
        db.session.add(
            IdempotencyKey(
                user_id=user_id,
                key=key,
                fingerprint=digest,
                task_id=task.id,
                response=body,
                created_at=task.created_at,
            )
        )
        db.session.flush()  # the key first: a duplicate stops here, before any task
        if db.session.get_bind().dialect.name == "postgresql":
            # The wait bounded above is for the key only: the task's write then waits
            # its turn on the user's change counter (taskapp.tasks.changes) as any write
            # does, and a slow write of another task is no reason for a 409.
            db.session.execute(text("SET LOCAL lock_timeout TO DEFAULT"))
        db.session.add(task)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        earlier = _earlier_answer(user_id, key, digest)
        if earlier is None:
            raise
        return earlier
    except OperationalError as error:
        db.session.rollback()
        if getattr(error.orig, "pgcode", None) == LOCK_NOT_AVAILABLE:
            abort(409, message="A request with this Idempotency-Key is still in progress.")
        raise
    return Created(task.id, body, replayed=False)


def _earlier_answer(user_id: str, key: str, digest: str) -> Created | None:
    record = db.session.get(IdempotencyKey, (user_id, key))
    if record is None:
        return None
    if record.created_at < utcnow() - KEEP_FOR:
        db.session.delete(record)  # expired: the key is free again
        db.session.flush()
        return None
    if record.fingerprint != digest:
        abort(
            422,
            messages={"headers": {HEADER: ["This key was already used with a different body."]}},
        )
    return Created(record.task_id, record.response, replayed=True)


def purge_expired() -> int:
    """Delete keys older than 24 hours; returns how many. Safe to run at any time."""
    statement = delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - KEEP_FOR)
    result = cast("CursorResult[Any]", db.session.execute(statement))  # a DELETE's: a row count
    db.session.commit()
    return result.rowcount
