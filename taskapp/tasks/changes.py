"""The change feed's data: a commit-ordered sequence of each user's writes, and reading it.

Every flush that inserts, changes or deletes a task takes the next numbers of its
user's sequence from that user's `change_counters` row (`take_sequence_numbers`), in
the flush's own transaction: an insert or update stamps the task's `change_seq`, a
delete leaves a tombstone with its number. The counter's row stays locked until the
transaction ends (PostgreSQL's row lock; SQLite has one writer at a time anyway), so a
user's writes take their numbers in the order they commit. That is the feed's
guarantee: once a reader has seen number n committed, every number below n is
committed too, and a reader that asks for the changes after the last number it saw
never misses a write, however the writes' timestamps are ordered.

The stamping is a `before_flush` hook on every SQLAlchemy session, not a call in each
view: any write through the ORM (the API, `flask seed`, a shell) is numbered, and
`change_seq` is NOT NULL, so a write around the ORM fails instead of going unseen.

A feed token is opaque to clients and built as the list's cursors are
(taskapp.tasks.listing): base64 of a checksum and a JSON object holding a `Position`
and a fingerprint of the user it was issued to. Nothing rests
on it being secret: it only says where to resume in the caller's own sequence, and
`decode_token` checks every value in it, so an edited token is refused with 422.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import delete, event, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, UOWTransaction

from taskapp.extensions import db
from taskapp.models import ChangeCounter, Task, TaskTombstone
from taskapp.timestamps import utcnow

CHECKSUM_LENGTH = 16
TOKEN_KEYS = frozenset({"s", "f", "u"})  # Position.seq, Position.floor, the user's fingerprint
SEQ_MAX = 2**63 - 1  # BIGINT


class InvalidToken(ValueError):
    """The token is damaged or edited, or was issued to another user."""


class TokenExpired(Exception):
    """The changes after the token cannot all be told: deletions it needs were purged,
    or it is ahead of every change this server has given out (a restored database)."""


# --- numbering every write --------------------------------------------------------


@event.listens_for(Session, "before_flush")
def number_task_writes(session: Session, _flush: UOWTransaction, _instances: Any) -> None:
    """Give every task this flush inserts, changes or deletes its user's next number."""
    writes: dict[str, list[tuple[Task, bool]]] = defaultdict(list)  # (task, deleted)
    for task in session.new:
        if isinstance(task, Task):
            writes[task.user_id].append((task, False))
    for task in session.dirty:
        # In `dirty` once any attribute was set, even to its own value: only a real
        # change is a write (it is also the only one SQLAlchemy sends an UPDATE for).
        if isinstance(task, Task) and session.is_modified(task):
            writes[task.user_id].append((task, False))
    for task in session.deleted:
        if isinstance(task, Task):
            writes[task.user_id].append((task, True))
    # One user after another, always in the same order: two flushes that each write
    # several users' tasks take the counters' locks in one order and cannot deadlock.
    for user_id in sorted(writes):
        changed = writes[user_id]
        last = take_sequence_numbers(session, user_id, len(changed))
        deleted_at = utcnow()
        for seq, (task, deleted) in enumerate(changed, start=last - len(changed) + 1):
            if deleted:
                # merge: a task id is a server-made uuid4 and is never re-used, but
                # should one be, its tombstone is renumbered rather than duplicated.
                session.merge(
                    TaskTombstone(user_id=user_id, task_id=task.id, seq=seq, deleted_at=deleted_at)
                )
            else:
                task.change_seq = seq


def take_sequence_numbers(session: Session, user_id: str, count: int) -> int:
    """Reserve `count` numbers of the user's sequence; returns the last of them.

    One statement whichever the database: insert the user's counter, or, when it
    exists (or a concurrent transaction inserts it first, which this one waits for),
    add to it. The counter's row stays locked until this transaction ends.
    """
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect == "postgresql":
        insert: Any = postgresql.insert(ChangeCounter)
    elif dialect == "sqlite":
        insert = sqlite.insert(ChangeCounter)
    else:  # pragma: no cover - taskapp runs on these two
        raise NotImplementedError(f"no change counter upsert for {dialect}")
    statement = (
        insert.values(user_id=user_id, last_seq=count, purged_seq=0)
        .on_conflict_do_update(
            index_elements=[ChangeCounter.user_id],
            set_={"last_seq": ChangeCounter.last_seq + insert.excluded.last_seq},
        )
        .returning(ChangeCounter.last_seq)
    )
    last: int = connection.execute(statement).scalar_one()
    return last


# --- reading the feed -------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """Where a client is in its user's sequence: what a token holds.

    `seq`: the client holds every change numbered up to it. `floor`: its sync started
    from nothing when every change up to this number had committed, so no deletion
    numbered up to it can be of a task the client holds (the task was gone before
    the client's first read). Deletions at or below the floor are not sent, and
    their purge does not invalidate the token: a client paging from nothing through
    a long history is not sent back to the start by tombstones it never needed.
    """

    seq: int
    floor: int


@dataclass(frozen=True)
class Change:
    seq: int
    task: Task | None  # an upsert's task as it is now
    tombstone: TaskTombstone | None  # a delete's


@dataclass(frozen=True)
class ChangePage:
    changes: list[Change]
    next: Position  # where the next request starts
    more: bool


def changes_after(user_id: str, start: Position | None, limit: int) -> ChangePage:
    """The user's changes after `start` (None: from nothing), at most `limit`, oldest
    first.

    Raises TokenExpired when the changes after `start` cannot all be told: tombstones
    it would need were purged, or it is ahead of every number given out.

    The counter is read first: every number up to its `last_seq` is committed (see the
    module's docstring), so the two reads below, of tasks and of tombstones, look at
    numbers up to it and no further, and need no common snapshot. A task changed again
    after the counter was read moves past it and is left for the next request; a
    task deleted meanwhile leaves a tombstone past it, which the next request tells.
    """
    last_seq, purged_seq = _counter(user_id)
    if start is None:
        start = Position(seq=0, floor=last_seq)
    elif max(start.seq, start.floor) > last_seq or purged_seq > max(start.seq, start.floor):
        raise TokenExpired
    tasks = db.session.scalars(
        select(Task)
        .where(Task.user_id == user_id, Task.change_seq > start.seq, Task.change_seq <= last_seq)
        .order_by(Task.change_seq)
        .limit(limit + 1)
    )
    tombstones = db.session.scalars(
        select(TaskTombstone)
        .where(
            TaskTombstone.user_id == user_id,
            TaskTombstone.seq > max(start.seq, start.floor),
            TaskTombstone.seq <= last_seq,
        )
        .order_by(TaskTombstone.seq)
        .limit(limit + 1)
    )
    # A purge that ran during the reads may have taken tombstones this page needed.
    if _counter(user_id)[1] > max(start.seq, start.floor):
        raise TokenExpired
    changes = sorted(
        [Change(task.change_seq, task, None) for task in tasks]
        + [Change(tombstone.seq, None, tombstone) for tombstone in tombstones],
        key=lambda change: change.seq,
    )
    more = len(changes) > limit
    page = changes[:limit]
    # A whole page tells everything up to the counter: the next one starts there.
    next_seq = page[-1].seq if more else last_seq
    return ChangePage(page, Position(next_seq, start.floor), more)


def _counter(user_id: str) -> tuple[int, int]:
    """The user's (last_seq, purged_seq), read afresh (not from the session's identity
    map); (0, 0) for a user who never wrote."""
    row = db.session.execute(
        select(ChangeCounter.last_seq, ChangeCounter.purged_seq).where(
            ChangeCounter.user_id == user_id
        )
    ).one_or_none()
    return (row.last_seq, row.purged_seq) if row else (0, 0)


# --- purging old tombstones -------------------------------------------------------


def purge_tombstones(days: int) -> int:
    """Delete tombstones older than `days`; returns how many. Safe to run at any time.

    Each user's counter remembers the highest number purged, so a token from before it
    is answered 410 rather than a feed that silently lacks those deletions.
    """
    cutoff = utcnow() - timedelta(days=days)
    purged = db.session.execute(
        delete(TaskTombstone)
        .where(TaskTombstone.deleted_at < cutoff)
        .returning(TaskTombstone.user_id, TaskTombstone.seq)
    ).all()
    highest: dict[str, int] = {}
    for user_id, seq in purged:
        highest[user_id] = max(seq, highest.get(user_id, 0))
    for user_id in sorted(highest):  # the writers' lock order (number_task_writes)
        db.session.execute(
            update(ChangeCounter)
            .where(ChangeCounter.user_id == user_id, ChangeCounter.purged_seq < highest[user_id])
            .values(purged_seq=highest[user_id])
        )
    db.session.commit()
    return len(purged)


# --- tokens -----------------------------------------------------------------------


def encode_token(user_id: str, position: Position) -> str:
    payload = {"s": position.seq, "f": position.floor, "u": _digest(user_id)}
    body = json.dumps(payload, separators=(",", ":"))
    raw = f"{_digest(body)}{body}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_token(user_id: str, token: str) -> Position:
    """The position in a token `encode_token` made for this user.

    Raises InvalidToken for anything else: not base64 of UTF-8, a wrong checksum, not
    a JSON object of exactly TOKEN_KEYS, a number that is not a whole one in BIGINT's
    range, or another user's fingerprint.
    """
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:  # not base64 (binascii.Error), or not UTF-8 (UnicodeDecodeError)
        raise InvalidToken("not base64 of UTF-8 text") from None
    checksum, body = raw[:CHECKSUM_LENGTH], raw[CHECKSUM_LENGTH:]
    if checksum != _digest(body):
        raise InvalidToken("checksum")
    try:
        payload = orjson.loads(body)  # strict JSON, bounded depth (see listing._payload)
    except orjson.JSONDecodeError:
        raise InvalidToken("not JSON") from None
    if not isinstance(payload, dict) or payload.keys() != TOKEN_KEYS:
        raise InvalidToken("not a token's keys")
    seq, floor = payload["s"], payload["f"]
    for number in (seq, floor):
        if type(number) is not int or not 0 <= number <= SEQ_MAX:
            raise InvalidToken("sequence number")
    if payload["u"] != _digest(user_id):
        raise InvalidToken("another user's token")
    return Position(seq, floor)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:CHECKSUM_LENGTH]


# The longest token `encode_token` writes, the bound of the `since` parameter.
TOKEN_MAX_LENGTH = len(encode_token("", Position(SEQ_MAX, SEQ_MAX)))
