"""How fast the task list is on PostgreSQL with 1,000,000 tasks over 10,000 users.

    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1/taskapp_bench python -m bench.list_queries

The database must be one the benchmark may fill: it applies the migrations, seeds
1,000,000 tasks over 10,000 users (100 each) plus one heavy user with 100,000, and
keeps them for the next run. It prints the query plan of each list query and the
p50/p95 latency of each through the whole request path (routing, token
verification, validation, SQL, serialization) in the Flask test client.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import flask_migrate
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from taskapp import create_app
from taskapp.extensions import db
from taskapp.tasks.listing import ListQuery, encode_cursor, page_query, sort_key

USERS = 10_000
TASKS = 1_000_000
HEAVY_USER = "user-heavy"
HEAVY_TASKS = 100_000
REQUESTS = 200
SECRET = "bench-secret-that-is-long-enough-for-hs256"  # noqa: S105 (a local benchmark)

SEED = """
INSERT INTO tasks (user_id, id, title, description, is_completed, priority,
                   completed_at, created_at, updated_at, version)
SELECT owner,
       md5(owner || ':' || g)::uuid,
       'Task ' || g || ' ' || (ARRAY['buy milk', 'call mum', 'write report',
                                     'fix bike', 'plan trip'])[1 + g % 5],
       CASE WHEN g % 3 = 0 THEN 'notes for task ' || g END,
       g % 4 = 0,
       1 + g % 5,
       CASE WHEN g % 4 = 0 THEN stamp END,
       stamp, stamp, 1
FROM (
    SELECT g, {owner} AS owner, now() - make_interval(secs => g) AS stamp
    FROM generate_series(1, :count) AS g
) AS rows
"""

SCENARIOS = {
    "default list (first page)": ("user-01234", {}),
    "filtered: open, priority 4 or 5": (
        "user-01234",
        {"completed": "false", "priority": ["4", "5"]},
    ),
    "search q=milk": ("user-01234", {"q": "milk"}),
    "sorted by title": ("user-01234", {"sort": "title"}),
    "heavy user: first page": (HEAVY_USER, {}),
    "heavy user: page at depth 50,000": (HEAVY_USER, {"cursor": "deep"}),
    "heavy user: filtered": (HEAVY_USER, {"completed": "false", "priority": ["4", "5"]}),
    "heavy user: search q=milk (1 in 5)": (HEAVY_USER, {"q": "milk"}),
    "heavy user: search q='report 4242' (rare)": (HEAVY_USER, {"q": "report 4242"}),
}


def seed() -> None:
    count = db.session.scalar(text("SELECT count(*) FROM tasks"))
    if count == TASKS + HEAVY_TASKS:
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


def deep_cursor(user_id: str, depth: int) -> str:
    query = ListQuery(user_id=user_id)
    row = db.session.scalars(page_query(query).offset(depth).limit(1)).one()
    return encode_cursor(query, sort_key(query, row), row.id)


def list_query(user_id: str, params: dict, cursor: str | None) -> ListQuery:
    return ListQuery(
        user_id=user_id,
        sort=params.get("sort", "-created_at"),
        cursor=cursor if params.get("cursor") else None,
        completed={"true": True, "false": False}.get(params.get("completed")),
        priorities=[int(p) for p in params.get("priority", [])] or None,
        q=params.get("q"),
    )


def explain(query: ListQuery) -> str:
    sql = page_query(query).compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    rows = db.session.execute(text(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {sql}"))
    return "\n".join("    " + line for (line,) in rows)


def main() -> int:
    url = os.environ.get("BENCH_DATABASE_URL")
    if not url:
        print("set BENCH_DATABASE_URL to a PostgreSQL database the benchmark may fill")
        return 2
    app = create_app({"DATABASE_URL": url, "BETTER_AUTH_SECRET": SECRET})
    client = app.test_client()
    with app.app_context():
        flask_migrate.upgrade()
        seed()
        cursor = deep_cursor(HEAVY_USER, 50_000)
        from flask_jwt_extended import create_access_token

        tokens = {user: create_access_token(user) for user in ("user-01234", HEAVY_USER)}
        results = []
        for name, (user_id, params) in SCENARIOS.items():
            print(f"\n{name}\n{explain(list_query(user_id, params, cursor))}")
            query_string = {**params, "cursor": cursor} if "cursor" in params else params
            headers = {"Authorization": f"Bearer {tokens[user_id]}"}
            timings = []
            for _ in range(REQUESTS):
                started = time.perf_counter()
                response = client.get(
                    f"/api/{user_id}/tasks", query_string=query_string, headers=headers
                )
                timings.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise SystemExit(f"{name}: {response.status_code} {response.json}")
            quantiles = statistics.quantiles(timings, n=20)
            results.append((name, statistics.median(timings), quantiles[18]))
    print(f"\n{'query':44} {'p50 ms':>8} {'p95 ms':>8}   ({REQUESTS} requests each)")
    for name, p50, p95 in results:
        print(f"{name:44} {p50:8.2f} {p95:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
