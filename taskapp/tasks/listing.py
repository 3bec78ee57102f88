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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    bindparam,
    false,
    func,
    literal_column,
    or_,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.orm import InstrumentedAttribute, aliased
from sqlalchemy.sql.elements import BindParameter

from taskapp.models import PRIORITY_MAX, PRIORITY_MIN, TITLE_MAX, Task, TaskTag, tag_key
from taskapp.timestamps import in_utc, utcnow

SORTS: dict[str, tuple[InstrumentedAttribute[Any], bool]] = {
    "-created_at": (Task.created_at, True),
    "created_at": (Task.created_at, False),
    "-updated_at": (Task.updated_at, True),
    "updated_at": (Task.updated_at, False),
    "-priority": (Task.priority, True),
    "priority": (Task.priority, False),
    "-title": (Task.title, True),
    "title": (Task.title, False),
    "-due_at": (Task.due_at, True),
    "due_at": (Task.due_at, False),
}
# Sort keys a task may lack: tasks without one come last in both directions.
UNDATED_LAST = frozenset({"due_at"})
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
    due_before: bool = False
    due_after: bool = False
    overdue: bool | None = None  # its value, not only whether it is set: two statements

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
            due_before=datetime.now(UTC) if self.due_before else None,
            due_after=datetime.now(UTC) if self.due_after else None,
            overdue=self.overdue,
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
    due_before: datetime | None = None
    due_after: datetime | None = None
    overdue: bool | None = None

    def shape(self) -> QueryShape:
        """What the statement depends on: the sort and which filters are set (not their
        values nor the page size, which are parameters); at most 10 x 2**8 x 3 shapes."""
        return QueryShape(
            self.sort,
            bool(self.cursor),
            self.completed is not None,
            bool(self.priorities),
            bool(self.q),
            self.updated_since is not None,
            tags=bool(self.tags),
            due_before=self.due_before is not None,
            due_after=self.due_after is not None,
            overdue=self.overdue,
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
        if self.due_before is not None:
            clauses.append(Task.due_at < bindparam("due_before", type_=Task.due_at.type))
        if self.due_after is not None:
            clauses.append(Task.due_at >= bindparam("due_after", type_=Task.due_at.type))
        if self.overdue is not None:
            now = bindparam("now", type_=Task.due_at.type)
            if self.overdue:
                clauses.append(and_(Task.due_at < now, Task.is_completed == false()))
            else:  # every other task: no due date, due now or later, or completed
                clauses.append(
                    or_(Task.due_at.is_(None), Task.due_at >= now, Task.is_completed == true())
                )
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
        if self.due_before is not None:
            values["due_before"] = self.due_before
        if self.due_after is not None:
            values["due_after"] = self.due_after
        if self.overdue is not None:
            values["now"] = utcnow()
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
        # Appended only when set, so cursors made before due dates existed stay valid.
        due = [
            self.due_before.isoformat() if self.due_before else None,
            self.due_after.isoformat() if self.due_after else None,
            self.overdue,
        ]
        if any(value is not None for value in due):
            scope += due
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


def page_select(query: ListQuery, *columns: Any, per_statement: Sequence[Any] = ()) -> Select[Any]:
    """One page plus one row of `columns`, in the sort's order, after the cursor's row:
    the extra row tells whether there is a next page. The one statement builder of the
    list: `page_query` selects tasks with it, taskapp.tasks.json_reads JSON text. Its
    parameters are `ListQuery.parameters`. `per_statement` are columns computed once for
    the whole statement (a COUNT), added after `columns`.
    """
    column, descending = SORTS[query.sort]
    if column.key in UNDATED_LAST:
        return _undated_last_page(query, columns, per_statement)
    statement = select(*columns, *per_statement).where(*query.filters())
    if query.cursor:
        statement = statement.where(_after(column, descending))
    return statement.order_by(*sort_order(query)).limit(bindparam("page_size_and_one"))


# The columns `_undated_last_page` orders its two runs by, beside the caller's.
RUN, RUN_KEY, RUN_ID = "page_run", "page_run_key", "page_run_id"


def _undated_last_page(
    query: ListQuery, columns: tuple[Any, ...], per_statement: Sequence[Any]
) -> Select[Any]:
    """`page_select` for a sort key a task may lack (UNDATED_LAST), tasks without one last
    in both directions: the dated run, then the undated one (by id), each read from the
    (user_id, key, id) index in the sort's direction and cut to a page, and the two (at
    most two pages) ordered by run, key and id.

    One ORDER BY key NULLS LAST, id would need an index per direction (a btree read
    backwards puts NULLs first); two runs keep one index, and keep the cursor's
    row comparison, which no NULL satisfies, for the dated run. After a cursor whose key
    is null only the undated run remains: `after_key IS NOT NULL OR id > after_id`, which
    PostgreSQL folds to one or the other before planning (psycopg2 sends values inline),
    so it is an index condition. SQLite binds it and filters the undated tasks up to the
    cursor instead: a deep page there costs its depth, which a development database bears.
    """
    column, descending = SORTS[query.sort]
    order = (column.desc(), Task.id.desc()) if descending else (column.asc(), Task.id.asc())
    entity = len(columns) == 1 and columns[0] is Task
    if entity:  # page_query: the table's columns in the runs, the entity over the page
        columns = tuple(Task.__table__.c)
    helpers = [column.label(RUN_KEY), Task.id.label(RUN_ID)]
    dated = select(*columns, literal_column("0").label(RUN), *helpers).where(*query.filters())
    undated = select(*columns, literal_column("1").label(RUN), *helpers).where(
        *query.filters(), column.is_(None)
    )
    if query.cursor:
        dated = dated.where(_after(column, descending))
        after_id = bindparam("after_id", type_=Task.id.type)
        undated = undated.where(
            or_(
                bindparam("after_key", type_=column.type).is_not(None),
                Task.id < after_id if descending else Task.id > after_id,
            )
        )
    else:
        dated = dated.where(column.is_not(None))
    size: BindParameter[int] = bindparam("page_size_and_one")
    # Each run a subquery of its own: SQLite allows no ORDER BY or LIMIT on a UNION's parts.
    runs = [run.order_by(*order).limit(size).subquery() for run in (dated, undated)]
    page = union_all(*(select(*run.c) for run in runs)).subquery("page")
    if entity:
        selected: list[Any] = [aliased(Task, page)]
    else:
        selected = [each for each in page.c if each.key not in (RUN, RUN_KEY, RUN_ID)]
    key, row_id = page.c[RUN_KEY], page.c[RUN_ID]
    by_key = (key.desc(), row_id.desc()) if descending else (key.asc(), row_id.asc())
    return (
        select(*selected, *per_statement)
        .select_from(page)
        .order_by(page.c[RUN], *by_key)
        .limit(size)
    )


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


def _sort_key(name: str, value: Any) -> datetime | int | str | None:
    """The cursor's sort key, checked as a value of its field: a timestamp as
    `updated_since` is (taskapp.timestamps.in_utc), a due date as one or null (a task
    without one), a priority and a title within a task's bounds (a title's text is
    UTF-8 and its JSON had no unpaired surrogate)."""
    if name == "due_at" and value is None:  # the page ended among the undated tasks
        return None
    if name in ("created_at", "updated_at", "due_at"):
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
