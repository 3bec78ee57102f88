"""The two hot reads, a page of the list and one task, answered with JSON the database writes.

The slow path loads `Task` objects and dumps them with `TaskResponseSchema`; here one
SQL statement returns the response body as one string, so no Python object is made per
task, and tests/test_json_reads.py pins the text to `TaskResponseSchema().dump()`, value
for value, on both databases. The JSON is compact and its keys come in the schema's
order, as the slow path's; each value is written by the database as that schema writes
it:

| field | PostgreSQL | SQLite (as SQLAlchemy stores it) |
|---|---|---|
| `id` | `uuid::text` | 32 hex digits, hyphenated here |
| text | `to_json(text)` | `json_quote(text)` |
| `is_completed` | `true`/`false` | 0/1, written `true`/`false` |
| timestamps | `to_char(ts AT TIME ZONE 'UTC', …)` | naive UTC text `YYYY-MM-DD HH:MM:SS.ffffff` |

Timestamps are ISO 8601 in UTC with six fractional digits and a `Z`, as `UTCTimestamp`.

The objects are joined by string concatenation (`string_agg` ordered on PostgreSQL,
`group_concat` on SQLite, whose 3.40 has no ORDER BY in an aggregate: it joins the rows
of the page, a MATERIALIZED CTE, in the order they were written into it) rather than by
`json_agg(json_build_object(...))`, whose output PostgreSQL spaces (`{"id" : …}, \\n`)
while every other answer of the API is compact.

Reads run on a connection in AUTOCOMMIT: no BEGIN before the statement, no ROLLBACK
after it, one round trip. A pooled connection the server has closed (a restart, an idle
timeout) fails the statement with `connection_invalidated`; a read is idempotent, so it is
retried once on a fresh connection. Any other database error propagates, and
taskapp.web.errors turns an outage into a 503.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, reduce
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Executable,
    Integer,
    Row,
    Select,
    String,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.exc import DBAPIError

from taskapp.extensions import db
from taskapp.models import Task
from taskapp.tasks.listing import (
    SORTS,
    ListQuery,
    QueryShape,
    count_query,
    page_select,
    sort_order,
)

# PostgreSQL's to_char pattern for UTCTimestamp's format: 2026-01-17T09:30:00.123456Z
PG_TIMESTAMP = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


@dataclass(frozen=True)
class TaskPage:
    body: str  # the page's JSON array
    rows: int  # how many tasks it holds
    more: bool  # whether there is a next page
    last_key: object  # the last task's sort key and id, for encode_cursor (when `more`)
    last_id: uuid.UUID | None
    total: int | None  # every task that matches the filters, when asked for


@dataclass(frozen=True)
class TaskJSON:
    body: str  # the task's JSON object
    version: int  # for the ETag


def task_page(query: ListQuery, count: bool = False) -> TaskPage:
    """One page of the list as `GET /tasks` answers it, in one statement.

    `count` adds an exact COUNT of every match. Raises InvalidCursor as
    `ListQuery.parameters` does, before any I/O.
    """
    parameters = query.parameters()  # first: an edited cursor is refused before any I/O
    statement = _page_statement(query.shape(), count, db.engine.dialect.name)
    # An aggregate without GROUP BY: always exactly one row.
    (row,) = _read(statement, parameters)
    return TaskPage(
        body=row.body,
        rows=row.rows,
        more=bool(row.more),
        last_key=row.last_key,
        last_id=row.last_id,
        total=row.total if count else None,
    )


def task(user_id: str, task_id: uuid.UUID) -> TaskJSON | None:
    """One task as `GET /tasks/<id>` answers it, or None when the user has no such task."""
    statement = _task_statement(db.engine.dialect.name)
    rows = _read(statement, {"user_id": user_id, "task_id": task_id})
    return TaskJSON(body=rows[0].body, version=rows[0].version) if rows else None


def _read(statement: Executable, parameters: dict[str, Any] | None = None) -> Sequence[Row[Any]]:
    """The statement's rows, read in AUTOCOMMIT; retried once on a fresh connection
    when the pooled one turns out to be dead."""
    for attempt in (1, 2):
        try:
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                return conn.execute(statement, parameters).all()
        except DBAPIError as error:
            if attempt == 2 or not error.connection_invalidated:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


# --- the statements -------------------------------------------------------------


@cache
def _page_statement(shape: QueryShape, count: bool, dialect: str) -> Executable:
    """WITH page AS (the page plus one row, numbered) SELECT the JSON array of the first
    `limit`, their number, whether the extra row exists, and the last one's sort key and id.

    Built once per shape of query (see ListQuery.shape; a few hundred at most): building
    it, and walking it for SQLAlchemy's cache key, cost more than running it.
    """
    query = shape.example()
    column, _ = SORTS[query.sort]
    page = (
        page_select(
            query,
            _task_object(dialect).label("task"),
            column.label("sort_key"),
            Task.id.label("id"),
            func.row_number().over(order_by=sort_order(query)).label("n"),
        )
        .cte("page")
        .prefix_with("MATERIALIZED")
    )
    page_size = bindparam("page_size", type_=Integer)
    last = page.c.n == page_size
    columns: list[Any] = [
        _json_array(page.c.task, page.c.n, dialect).label("body"),
        func.count().label("rows"),
        # Uncorrelated: each reads the whole page, not the outer query's row.
        exists().where(page.c.n > page_size).correlate(None).label("more"),
        select(page.c.sort_key).where(last).correlate(None).scalar_subquery().label("last_key"),
        select(page.c.id).where(last).correlate(None).scalar_subquery().label("last_id"),
    ]
    if count:
        columns.append(count_query(query).scalar_subquery().label("total"))
    return select(*columns).select_from(page).where(page.c.n <= page_size)


def _json_array(task: ColumnElement[str], n: ColumnElement[int], dialect: str) -> Any:
    """`[` the tasks in page order, joined by commas `]`; `[]` for none."""
    comma = literal_column("','", String)
    joined: ColumnElement[Any]
    if dialect == "postgresql":
        joined = func.string_agg(task, comma).aggregate_order_by(n)
    else:
        joined = func.group_concat(task, comma)  # in page order: see the module's docstring
    return _concat("[", func.coalesce(joined, _sql_string("")), "]")


@cache
def _task_statement(dialect: str) -> Select[str, int]:
    """SELECT one task's JSON and version; the same statement object for every request,
    so SQLAlchemy computes its cache key once."""
    return select(_task_object(dialect).label("body"), Task.version.label("version")).where(
        Task.user_id == bindparam("user_id"), Task.id == bindparam("task_id", type_=Task.id.type)
    )


@cache
def _task_object(dialect: str) -> ColumnElement[str]:
    """One task's JSON object, with TaskResponseSchema's keys in its order.

    Built and compiled once per dialect, then used as SQL text: the expression has
    ~150 elements, and building it (and walking it for SQLAlchemy's statement cache
    key) on every request cost more than the query itself.
    """
    values = _pg_values() if dialect == "postgresql" else _sqlite_values()
    parts: list[ColumnElement[Any] | str] = []
    for index, (name, value) in enumerate(values):
        parts += [("{" if index == 0 else ",") + f'"{name}":', value]
    expression = _concat(*parts, "}")
    sql = expression.compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True})
    return literal_column(str(sql), String)


def _pg_values() -> Sequence[tuple[str, ColumnElement[Any]]]:
    def text(column: Any) -> ColumnElement[Any]:
        return func.coalesce(cast(func.to_json(column), String), NULL)

    def timestamp(column: Any) -> ColumnElement[Any]:
        utc = func.to_char(func.timezone(_sql_string("UTC"), column), _sql_string(PG_TIMESTAMP))
        return func.coalesce(_concat('"', utc, '"'), NULL)

    return [
        ("id", _concat('"', cast(Task.id, String), '"')),
        ("user_id", text(Task.user_id)),
        ("title", text(Task.title)),
        ("description", text(Task.description)),
        ("is_completed", _boolean(Task.is_completed)),
        ("priority", cast(Task.priority, String)),
        ("completed_at", timestamp(Task.completed_at)),
        ("created_at", timestamp(Task.created_at)),
        ("updated_at", timestamp(Task.updated_at)),
    ]


def _sqlite_values() -> Sequence[tuple[str, ColumnElement[Any]]]:
    def text(column: Any) -> ColumnElement[Any]:
        return func.json_quote(column)

    def hyphenated(column: Any) -> ColumnElement[Any]:
        hex_digits = type_coerce(column, String)  # as stored: 32 hex digits
        groups = [(1, 8), (9, 4), (13, 4), (17, 4), (21, 12)]
        pieces = [func.substr(hex_digits, start, length) for start, length in groups]
        return _concat('"', *_between(pieces, "-"), '"')

    def timestamp(column: Any) -> ColumnElement[Any]:
        # Stored as `YYYY-MM-DD HH:MM:SS.ffffff` (naive UTC); padded to six digits
        # should a row ever hold fewer.
        stored = type_coerce(column, String)
        fraction = func.substr(_concat(func.substr(stored, 21), "000000"), 1, 6)
        iso = _concat(
            '"', func.substr(stored, 1, 10), "T", func.substr(stored, 12, 8), ".", fraction, 'Z"'
        )
        return func.coalesce(iso, NULL)

    return [
        ("id", hyphenated(Task.id)),
        ("user_id", text(Task.user_id)),
        ("title", text(Task.title)),
        ("description", text(Task.description)),
        ("is_completed", _boolean(Task.is_completed)),
        ("priority", cast(type_coerce(Task.priority, Integer), String)),
        ("completed_at", timestamp(Task.completed_at)),
        ("created_at", timestamp(Task.created_at)),
        ("updated_at", timestamp(Task.updated_at)),
    ]


def _boolean(column: Any) -> ColumnElement[Any]:
    return case((type_coerce(column, Boolean), _sql_string("true")), else_=_sql_string("false"))


def _concat(*parts: ColumnElement[Any] | str) -> ColumnElement[str]:
    """`a || b || …`; plain strings become SQL string literals (not parameters), so the
    statement's text, and SQLAlchemy's cache of it, is the same for every request."""
    elements = [_sql_string(part) if isinstance(part, str) else part for part in parts]
    return reduce(lambda left, right: left.concat(right), elements)


def _sql_string(text: str) -> ColumnElement[str]:
    return literal_column("'" + text.replace("'", "''") + "'", String)


NULL = _sql_string("null")  # JSON's null, for a NULL value


def _between(items: Sequence[ColumnElement[Any]], separator: str) -> list[ColumnElement[Any] | str]:
    joined: list[ColumnElement[Any] | str] = []
    for index, item in enumerate(items):
        joined += [separator, item] if index else [item]
    return joined
