"""Database time of each kind of list page, for a user with 100,000 tasks.

    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1/taskapp_bench python -m bench.list_queries

The database must be one the benchmark may fill: it applies the migrations, seeds
1,000,000 tasks over 10,000 users (100 each) plus one heavy user with 100,000 (two in
three with a due date, half of those in the past), and keeps them for the next run.

Each page is the statement `GET /api/<user_id>/tasks` runs: the query string goes
through the view's own schema into a `ListQuery`, and the statement is
json_reads' (built once per shape, its COUNT only with `Prefer: count=exact`),
bound to `ListQuery.parameters()` and executed by json_reads' own reader. For each
page it prints the plan of a warm-up run, then the medians of RUNS runs of
EXPLAIN (ANALYZE, BUFFERS): planning and execution time (psycopg2 sends the values
inline, so every request is planned afresh and both are the request's database
time), the buffers touched, whether a Seq Scan reads tasks, and the round trip of
`json_reads.task_page` itself (the database time plus the wire and psycopg2).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import flask_migrate
from sqlalchemy import ClauseElement, Executable, func, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from taskapp import create_app
from taskapp.extensions import db
from taskapp.models import Task
from taskapp.tasks import json_reads
from taskapp.tasks.listing import (
    SORTS,
    UNDATED_LAST,
    ListQuery,
    encode_cursor,
    page_query,
    sort_key,
)
from taskapp.tasks.schemas import TaskListQuerySchema

USERS = 10_000
TASKS = 1_000_000
HEAVY_USER = "user-heavy"
HEAVY_TASKS = 100_000
TYPICAL_USER = "user-01234"  # 100 tasks, as every seeded user but the heavy one
RUNS = 15
HOST = "localhost"  # the test client's, which TRUSTED_HOSTS must name
SECRET = "bench-secret-that-is-long-enough-for-hs256"  # noqa: S105 (a local benchmark)

SEED = """
INSERT INTO tasks (user_id, id, title, description, is_completed, priority,
                   completed_at, created_at, updated_at, version, due_at, change_seq)
SELECT owner,
       md5(owner || ':' || g)::uuid,
       'Task ' || g || ' ' || (ARRAY['buy milk', 'call mum', 'write report',
                                     'fix bike', 'plan trip'])[1 + g % 5],
       CASE WHEN g % 3 = 0 THEN 'notes for task ' || g END,
       g % 4 = 0,
       1 + g % 5,
       CASE WHEN g % 4 = 0 THEN stamp END,
       stamp, stamp, 1,
       CASE WHEN g % 3 <> 0 THEN stamp + make_interval(days => g % 60 - 30) END, g
FROM (
    SELECT g, {owner} AS owner, now() - make_interval(secs => g) AS stamp
    FROM generate_series(1, :count) AS g
) AS rows
"""


@dataclass(frozen=True)
class Page:
    name: str
    args: dict[str, str] = field(default_factory=dict)  # the query string, as a client sends it
    user: str = HEAVY_USER
    after: int = 0  # how many rows the pages before it held: its cursor is that deep
    changed: int = 0  # updated_since such that this many of the user's tasks match
    count: bool = False  # `Prefer: count=exact`
    due_after_days: int = 0  # due_after this many days after the newest task was created


# The heavy user's titles are 'Task <n> <one of five phrases>': "milk" is in one in
# five, "4242 write" in ten (n = 4242, 14242, ... 94242), "report 4242" and "milk call"
# (each of whose words is in a fifth of all titles) in none.
PAGES = [
    Page("first page (default, -created_at)"),
    Page("first page, Prefer: count=exact", count=True),
    Page("after 50,000 rows", after=50_000),
    Page("after 99,000 rows", after=99_000),
    Page("completed=true", {"completed": "true"}),
    Page("completed=false", {"completed": "false"}),
    Page("completed=false, after 50,000 rows", {"completed": "false"}, after=50_000),
    Page("completed=false, priority=4&5", {"completed": "false", "priority": "4,5"}),
    Page("q=milk (1 in 5)", {"q": "milk"}),
    Page("q=4242 write (10 of 100,000)", {"q": "4242 write"}),
    Page("q=report 4242 (none)", {"q": "report 4242"}),
    Page("q=milk call (none, common trigrams)", {"q": "milk call"}),
    Page("updated_since (50,000 match)", changed=50_000),
    Page("updated_since (100 match), sort=created_at", {"sort": "created_at"}, changed=100),
    Page("sort=created_at", {"sort": "created_at"}),
    Page("sort=-updated_at", {"sort": "-updated_at"}),
    Page("sort=updated_at", {"sort": "updated_at"}),
    Page("sort=-priority", {"sort": "-priority"}),
    Page("sort=priority", {"sort": "priority"}),
    Page("sort=-title", {"sort": "-title"}),
    Page("sort=title", {"sort": "title"}),
    Page("sort=title, after 50,000 rows", {"sort": "title"}, after=50_000),
    # Two in three of the heavy user's tasks have a due date: 66,667 dated, then 33,333 not.
    Page("sort=due_at", {"sort": "due_at"}),
    Page("sort=-due_at", {"sort": "-due_at"}),
    Page("sort=due_at, after 50,000 rows (dated)", {"sort": "due_at"}, after=50_000),
    Page("sort=-due_at, after 66,000 rows (both runs)", {"sort": "-due_at"}, after=66_640),
    Page("sort=due_at, after 90,000 rows (undated)", {"sort": "due_at"}, after=90_000),
    Page("overdue=true, sort=due_at", {"overdue": "true", "sort": "due_at"}),
    Page("overdue=false", {"overdue": "false"}),
    Page("due_after (1 in 60 match), sort=due_at", {"sort": "due_at"}, due_after_days=28),
    Page("typical user: first page", user=TYPICAL_USER),
    Page("typical user: first page, Prefer: count=exact", user=TYPICAL_USER, count=True),
    Page("typical user: q=milk (none of theirs)", {"q": "milk"}, user=TYPICAL_USER),
]


class Explain(Executable, ClauseElement):
    """EXPLAIN (options) of a statement that keeps its bind parameters, so SQLAlchemy
    binds them (expanding lists, UUIDs, timestamps) exactly as when the API runs it."""

    inherit_cache = False  # each EXPLAIN is compiled afresh: nothing to cache

    def __init__(self, statement: Executable, how: str) -> None:
        # Every statement SQLAlchemy builds is a ClauseElement too.
        self.statement = cast(ClauseElement, statement)
        self.how = how  # not `options`: Executable.options() is SQLAlchemy's


@compiles(Explain)
def _compile_explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return f"EXPLAIN ({element.how}) {compiler.process(element.statement, **kw)}"


@dataclass(frozen=True)
class Figures:
    planning: float  # ms, median
    execution: float  # ms, median
    database: float  # ms, median of planning + execution
    round_trip: float  # ms, median of json_reads.task_page
    buffers: int  # shared blocks hit or read in one run
    seq_scan: bool  # whether any run read tasks with a Seq Scan
    indexes: list[str]


def seed() -> None:
    count, dated = db.session.execute(text("SELECT count(*), count(due_at) FROM tasks")).one()
    if count == TASKS + HEAVY_TASKS and dated:  # seeded, and since due dates exist
        return
    print(f"seeding {TASKS:,} tasks over {USERS:,} users and {HEAVY_TASKS:,} for one user ...")
    started = time.perf_counter()
    db.session.execute(text("TRUNCATE tasks"))
    owner = f"'user-' || lpad((g % {USERS})::text, 5, '0')"
    db.session.execute(text(SEED.format(owner=owner)), {"count": TASKS})
    db.session.execute(text(SEED.format(owner=f"'{HEAVY_USER}'")), {"count": HEAVY_TASKS})
    db.session.commit()
    # As autovacuum would: statistics for the planner, a visibility map for index-only counts.
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE tasks"))
    print(f"seeded in {time.perf_counter() - started:.0f} s")


def list_query(page: Page) -> ListQuery:
    """The ListQuery the view builds for this page's query string."""
    args: dict[str, Any] = dict(page.args)
    if "priority" in args:
        args["priority"] = args["priority"].split(",")  # repeated in a real query string
    if page.changed:
        args["updated_since"] = changed_since(page.user, page.changed)
    if page.due_after_days:
        newest = db.session.scalar(
            select(func.max(Task.created_at)).where(Task.user_id == page.user)
        )
        assert newest is not None  # noqa: S101
        args["due_after"] = (newest + timedelta(days=page.due_after_days)).isoformat()
    query = ListQuery(user_id=page.user, **TaskListQuerySchema().load(args))
    if not page.after:
        return query
    args["cursor"] = cursor_after(query, page.after)
    return ListQuery(user_id=page.user, **TaskListQuerySchema().load(args))


def changed_since(user_id: str, rows: int) -> str:
    """An updated_since that exactly `rows` of the user's tasks were changed after."""
    moment = db.session.scalar(
        select(Task.updated_at)
        .where(Task.user_id == user_id)
        .order_by(Task.updated_at.desc())
        .offset(rows)
        .limit(1)
    )
    assert moment is not None, f"{user_id} has no more than {rows} tasks"  # noqa: S101
    return moment.isoformat()


def cursor_after(query: ListQuery, rows: int) -> str:
    """The cursor a client holds after paging through `rows` rows: the page that ended
    with the query's rows-th task. Found by OFFSET, only to set up the page."""
    statement = page_query(query)
    column, descending = SORTS[query.sort]
    if column.key in UNDATED_LAST:  # its page statement reads a page of each run, no more
        by = (column.desc(), Task.id.desc()) if descending else (column.asc(), Task.id.asc())
        statement = (
            select(Task)
            .where(*query.filters())
            .order_by(column.is_(None), *by)
            .params(query.parameters())
        )
    last = db.session.scalars(statement.offset(rows - 1).limit(1)).one()
    return encode_cursor(query, sort_key(query, last), last.id)


def page_statement(query: ListQuery, count: bool) -> Executable:
    # The very statement object task_page runs (json_reads caches it per shape).
    return json_reads._page_statement(query.shape(), count, db.engine.dialect.name)


def explain(query: ListQuery, count: bool, how: str) -> Any:
    rows = json_reads._read(Explain(page_statement(query, count), how), query.parameters())
    return [row[0] for row in rows]


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def measure(query: ListQuery, count: bool) -> Figures:
    # TIMING OFF: per-node clocks would inflate the total; the execution time is still timed.
    how = "ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON"
    runs = [explain(query, count, how)[0][0] for _ in range(RUNS)]
    round_trips = []
    for _ in range(RUNS):
        started = time.perf_counter()
        json_reads.task_page(query, count=count)
        round_trips.append((time.perf_counter() - started) * 1000)
    nodes = [node for run in runs for node in plan_nodes(run["Plan"])]
    root = runs[-1]["Plan"]
    return Figures(
        planning=statistics.median(run["Planning Time"] for run in runs),
        execution=statistics.median(run["Execution Time"] for run in runs),
        database=statistics.median(run["Planning Time"] + run["Execution Time"] for run in runs),
        round_trip=statistics.median(round_trips),
        buffers=root["Shared Hit Blocks"] + root["Shared Read Blocks"],
        seq_scan=any(
            node["Node Type"] == "Seq Scan" and node.get("Relation Name") == "tasks"
            for node in nodes
        ),
        indexes=sorted({node["Index Name"] for node in nodes if "Index Name" in node}),
    )


def print_table(results: list[tuple[Page, Figures]]) -> None:
    """The figures as the Markdown table bench/README.md keeps."""
    print(f"\n(medians of {RUNS} runs after a warm-up; ms)\n")
    print("| page | planning | execution | database | round trip | buffers | Seq Scan on tasks |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for page, figures in results:
        print(
            f"| {page.name} | {figures.planning:.2f} | {figures.execution:.2f} "
            f"| {figures.database:.2f} | {figures.round_trip:.2f} | {figures.buffers:,} "
            f"| {'**yes**' if figures.seq_scan else 'no'} |"
        )


def main() -> int:
    url = os.environ.get("BENCH_DATABASE_URL")
    if not url:
        print("set BENCH_DATABASE_URL to a PostgreSQL database the benchmark may fill")
        return 2
    app = create_app({"DATABASE_URL": url, "BETTER_AUTH_SECRET": SECRET, "TRUSTED_HOSTS": HOST})
    with app.app_context():
        flask_migrate.upgrade()
        seed()
        results = []
        for page in PAGES:
            query = list_query(page)
            # The warm-up run, whose plan (with each node's time) is the one printed.
            plan = explain(query, page.count, "ANALYZE, BUFFERS, COSTS OFF")
            print(f"\n{page.name}\n" + "\n".join("    " + line for line in plan))
            figures = measure(query, page.count)
            print(f"    indexes: {', '.join(figures.indexes) or 'none'}")
            results.append((page, figures))
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
