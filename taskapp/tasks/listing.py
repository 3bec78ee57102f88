"""The task list: filters, sort orders and keyset cursors.

Pages are cut by the last row's sort key and id (keyset), never by an offset, so
tasks created or deleted between two requests neither repeat nor go missing,
and a deep page costs what the first does.

A cursor is opaque to clients but neither secret nor sealed: base64 of a checksum and
a JSON object naming the last row seen (its sort key and id) and a fingerprint of the
user, sort and filters it was made for. The checksum is an unkeyed hash, so it catches
a cursor damaged on the way (cut short, mistyped), not one edited on purpose: anyone
can recompute it. Nothing rests on it. A cursor only says where to resume in the
caller's own list (every statement filters on the user of the path, whom the token
must name), so no cursor can reveal or reach another user's tasks; and every value
in it is checked as the query parameter it stands for would be (`decode_cursor`), so
any cursor a client can build is either followed or refused with 422, never a
database error.

Statements hold no values: each value is a named parameter (`ListQuery.parameters`),
so one statement serves every query of the same shape (`ListQuery.shape`) and
taskapp.tasks.json_reads builds each shape's statement once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import ColumnElement, Integer, Select, bindparam, func, or_, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from taskapp.models import PRIORITY_MAX, PRIORITY_MIN, TITLE_MAX, Task, TaskTag, tag_key
from taskapp.timestamps import in_utc

SORTS: dict[str, tuple[InstrumentedAttribute[Any], bool]] = {
    "-created_at": (Task.created_at, True),
    "created_at": (Task.created_at, False),
    "-updated_at": (Task.updated_at, True),
    "updated_at": (Task.updated_at, False),
    "-priority": (Task.priority, True),
    "priority": (Task.priority, False),
    "-title": (Task.title, True),
    "title": (Task.title, False),
}
DEFAULT_SORT = "-created_at"
CHECKSUM_LENGTH = 16
CURSOR_KEYS = frozenset({"v", "i", "f"})  # sort key value, row id, fingerprint


class InvalidCursor(ValueError):
    """The cursor is damaged or edited, or belongs to another user or another query."""


class QueryShape(NamedTuple):
    sort: str
    cursor: bool
    completed: bool
    priorities: bool
    q: bool
    updated_since: bool
    tags: bool = False

    def example(self) -> ListQuery:
        """A query of this shape: its values do not matter, only which filters it sets."""
        return ListQuery(
            user_id="",
            sort=self.sort,
            cursor="example" if self.cursor else None,
            completed=True if self.completed else None,
            priorities=[PRIORITY_MIN] if self.priorities else None,
            q="example" if self.q else None,
            updated_since=datetime.now(UTC) if self.updated_since else None,
            tags=["example"] if self.tags else None,
        )


@dataclass(frozen=True)
class ListQuery:
    user_id: str
    sort: str = DEFAULT_SORT
    limit: int = 100
    cursor: str | None = None
    completed: bool | None = None
    priorities: list[int] | None = None
    q: str | None = None
    updated_since: datetime | None = None
    tags: list[str] | None = None

    def shape(self) -> QueryShape:
        """What the statement depends on: the sort and which filters are set (not their
        values nor the page size, which are parameters); at most 8 x 2**6 shapes."""
        return QueryShape(
            self.sort,
            bool(self.cursor),
            self.completed is not None,
            bool(self.priorities),
            bool(self.q),
            self.updated_since is not None,
            tags=bool(self.tags),
        )

    def tag_keys(self) -> list[str]:
        """The `tag` filter's tags as task_tags keys them, each once."""
        return sorted({tag_key(tag) for tag in self.tags or ()})

    def filters(self) -> list[ColumnElement[bool]]:
        """The WHERE clauses: the owner always, then each filter given."""
        clauses: list[ColumnElement[bool]] = [Task.user_id == bindparam("user_id")]
        if self.completed is not None:
            clauses.append(
                Task.is_completed == bindparam("completed", type_=Task.is_completed.type)
            )
        if self.priorities:
            clauses.append(Task.priority.in_(bindparam("priorities", expanding=True)))
        if self.q:
            pattern = bindparam("pattern", type_=Task.title.type)
            clauses.append(
                or_(
                    Task.title.ilike(pattern, escape="\\"),
                    Task.description.ilike(pattern, escape="\\"),
                )
            )
        if self.updated_since is not None:
            clauses.append(Task.updated_at > bindparam("updated_since", type_=Task.updated_at.type))
        if self.tags:
            clauses.append(Task.id.in_(_tagged_with_every_tag()))
        return clauses

    def parameters(self) -> dict[str, Any]:
        """The values of the statements' parameters. Raises InvalidCursor as decode_cursor."""
        values: dict[str, Any] = {
            "user_id": self.user_id,
            "page_size": self.limit,
            "page_size_and_one": self.limit + 1,  # one more row says whether a next page exists
        }
        if self.completed is not None:
            values["completed"] = self.completed
        if self.priorities:
            values["priorities"] = self.priorities
        if self.q:
            values["pattern"] = f"%{escape_like(self.q)}%"
        if self.updated_since is not None:
            values["updated_since"] = self.updated_since
        if self.tags:
            values["tag_keys"] = self.tag_keys()
            values["tag_count"] = len(values["tag_keys"])
        if self.cursor:
            values["after_key"], values["after_id"] = decode_cursor(self)
        return values

    def fingerprint(self) -> str:
        """Who and what a cursor was made for: the user, the sort and every filter."""
        scope: list[object] = [
            self.user_id,
            self.sort,
            self.completed,
            sorted(set(self.priorities or ())),
            self.q,
            self.updated_since.isoformat() if self.updated_since else None,
        ]
        if self.tags:  # only then: cursors made before the tag filter existed still hold
            scope.append(self.tag_keys())
        return _digest(json.dumps(scope, separators=(",", ":")))


def _tagged_with_every_tag() -> Select[Any]:
    """The ids of the user's tasks that carry every one of the `tag_keys`: one range of
    the (user_id, tag_key) index per tag, whichever order the list is sorted in."""
    return (
        select(TaskTag.task_id)
        .where(
            TaskTag.user_id == bindparam("user_id"),
            TaskTag.tag_key.in_(bindparam("tag_keys", expanding=True)),
        )
        .group_by(TaskTag.task_id)
        .having(func.count() == bindparam("tag_count", type_=Integer))
    )


def escape_like(text: str) -> str:
    """`%` and `_` in search text match themselves, not any characters."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def count_query(query: ListQuery) -> Select[int]:
    """How many tasks match, with parameters (`ListQuery.parameters`) to bind."""
    return select(func.count()).select_from(Task).where(*query.filters())


def page_select(query: ListQuery, *columns: Any) -> Select[Any]:
    """One page plus one row of `columns`, in the sort's order, after the cursor's row:
    the extra row tells whether there is a next page. The one statement builder of the
    list: `page_query` selects tasks with it, taskapp.tasks.json_reads JSON text. Its
    parameters are `ListQuery.parameters`.
    """
    column, descending = SORTS[query.sort]
    statement = select(*columns).where(*query.filters())
    if query.cursor:
        statement = statement.where(_after(column, descending))
    return statement.order_by(*sort_order(query)).limit(bindparam("page_size_and_one"))


def page_query(query: ListQuery) -> Select[Any]:
    """One page of tasks plus one row (see `page_select`), its parameters bound.

    Raises InvalidCursor when the query's cursor is not one of its own.
    """
    return page_select(query, Task).params(query.parameters())


def sort_order(query: ListQuery) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """ORDER BY the sort key, then the id, both in the sort's direction."""
    column, descending = SORTS[query.sort]
    if descending:
        return column.desc(), Task.id.desc()
    return column.asc(), Task.id.asc()


def _after(column: InstrumentedAttribute[Any], descending: bool) -> ColumnElement[bool]:
    # A row comparison, (key, id) < (last key, last id), which PostgreSQL serves
    # straight from the (user_id, key, id) index.
    row = tuple_(column, Task.id)
    bound = tuple_(
        bindparam("after_key", type_=column.type), bindparam("after_id", type_=Task.id.type)
    )
    return row < bound if descending else row > bound


def encode_cursor(query: ListQuery, value: object, last_id: uuid.UUID) -> str:
    """The cursor of the page that ended with the row whose sort key is `value`."""
    return _seal(
        {
            "v": value.isoformat() if isinstance(value, datetime) else value,
            "i": last_id.hex,
            "f": query.fingerprint(),
        }
    )


def _seal(payload: dict[str, object]) -> str:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    raw = f"{_digest(body)}{body}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sort_key(query: ListQuery, task: Task) -> object:
    """A task's value of the query's sort key, as `encode_cursor` takes it."""
    column, _ = SORTS[query.sort]
    return getattr(task, column.key)


def decode_cursor(query: ListQuery) -> tuple[object, uuid.UUID]:
    """The (sort key, id) of the last row the cursor's page ended with.

    Raises InvalidCursor unless the cursor is one `encode_cursor` could have made for
    this query: each value checked as the parameter it stands for (the sort key as
    the sort's field, the id as a task id) and the fingerprint equal to this query's.
    """
    payload = _payload(query.cursor or "")
    if payload["f"] != query.fingerprint():
        raise InvalidCursor("another query's cursor")
    column, _ = SORTS[query.sort]
    return _sort_key(column.key, payload["v"]), _row_id(payload["i"])


def _payload(cursor: str) -> dict[str, Any]:
    """The cursor's JSON object, its checksum right and its keys exactly CURSOR_KEYS."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:  # not base64 (binascii.Error), or not UTF-8 (UnicodeDecodeError)
        raise InvalidCursor("not base64 of UTF-8 text") from None
    checksum, body = raw[:CHECKSUM_LENGTH], raw[CHECKSUM_LENGTH:]
    if checksum != _digest(body):
        raise InvalidCursor("checksum")
    try:
        # orjson, not json: strict JSON only, a bounded nesting depth (json recurses
        # into `[[[[…` until RecursionError) and no unpaired surrogate in a string.
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidCursor("not JSON") from None
    if not isinstance(payload, dict) or payload.keys() != CURSOR_KEYS:
        raise InvalidCursor("not a cursor's keys")
    return payload


def _sort_key(name: str, value: Any) -> datetime | int | str:
    """The cursor's sort key, checked as a value of its field: a timestamp as
    `updated_since` is (taskapp.timestamps.in_utc), a priority and a title within a
    task's bounds (a title's text is UTF-8 and its JSON had no unpaired surrogate)."""
    if name in ("created_at", "updated_at"):
        if not isinstance(value, str):
            raise InvalidCursor("timestamp")
        try:
            return in_utc(datetime.fromisoformat(value))  # as marshmallow reads updated_since
        except ValueError:
            raise InvalidCursor("timestamp") from None
    if name == "priority":
        if type(value) is not int or not PRIORITY_MIN <= value <= PRIORITY_MAX:
            raise InvalidCursor("priority")
        return value
    if not isinstance(value, str) or not 1 <= len(value) <= TITLE_MAX or "\x00" in value:
        raise InvalidCursor("title")
    return value


def _row_id(value: Any) -> uuid.UUID:
    """The cursor's row id, as the path's task id is read."""
    if not isinstance(value, str):
        raise InvalidCursor("id")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidCursor("id") from None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:CHECKSUM_LENGTH]


# The longest cursor `encode_cursor` writes, the bound of the `cursor` parameter: the
# longest title, of characters JSON escapes to six (`\u0001`), ends a page.
CURSOR_MAX_LENGTH = len(
    _seal({"v": "\x01" * TITLE_MAX, "i": uuid.UUID(int=0).hex, "f": "0" * CHECKSUM_LENGTH})
)
