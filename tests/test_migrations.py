"""The migrations build the schema from empty, remove it again, and match the models;
hosts that migrate at the same moment take turns."""

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Boolean,
    DateTime,
    Engine,
    Integer,
    String,
    Uuid,
    column,
    create_engine,
    inspect,
    select,
    table,
    text,
)
from sqlalchemy.engine import make_url

from taskapp import create_app
from taskapp.config import database_url
from taskapp.migration_lock import MIGRATION_LOCK_KEY
from tests.conftest import postgres_url_or_skip
from tests.support import HS_SECRET, ROOT, START_TIMEOUT, run_pgbouncer, stop


@contextlib.contextmanager
def new_postgres_schema() -> Iterator[tuple[Engine, str]]:
    """A new, empty schema in the PostgreSQL test database, and an engine that reaches it
    directly; dropped with everything in it at the end."""
    admin = create_engine(make_url(database_url(postgres_url_or_skip(), "/unused")))
    schema = f"migrations_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield admin, schema
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def in_schema(url: str, schema: str) -> str:
    """`url` with the schema as its search_path."""
    with_path = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return with_path.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path):
    """A URL to a database with nothing in it: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.sqlite3'}"
        return
    with new_postgres_schema() as (admin, schema):
        yield in_schema(admin.url.render_as_string(hide_password=False), schema)


@pytest.fixture
def db_runner(empty_database, tmp_path):
    app = create_app(
        {"DATABASE_URL": empty_database, "BETTER_AUTH_SECRET": HS_SECRET},
        instance_path=str(tmp_path),
    )
    yield app.test_cli_runner()
    with app.app_context():
        from taskapp.extensions import db

        db.engine.dispose()


def table_names(url: str) -> set[str]:
    engine = create_engine(database_url(url, "/unused"))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


# Every table at the head revision, Alembic's own included.
HEAD_TABLES = {
    "tasks",
    "task_tags",
    "idempotency_keys",
    "change_counters",
    "task_tombstones",
    "alembic_version",
}


def test_upgrade_builds_the_schema_from_empty(db_runner, empty_database):
    result = db_runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert table_names(empty_database) == HEAD_TABLES


def test_models_and_migrations_do_not_drift(db_runner):
    assert db_runner.invoke(args=["db", "upgrade"]).exit_code == 0
    result = db_runner.invoke(args=["db", "check"])
    assert result.exit_code == 0, result.output


def test_drift_check_fails_on_a_database_behind_the_models(db_runner):
    # Without the schema the check must report differences; proves the check can fail.
    result = db_runner.invoke(args=["db", "check"])
    assert result.exit_code != 0


def test_downgrade_base_removes_the_schema(db_runner, empty_database):
    assert db_runner.invoke(args=["db", "upgrade"]).exit_code == 0
    result = db_runner.invoke(args=["db", "downgrade", "base"])
    assert result.exit_code == 0, result.output
    assert table_names(empty_database) <= {"alembic_version"}


def test_list_index_exists_after_upgrade(db_runner, empty_database):
    assert db_runner.invoke(args=["db", "upgrade"]).exit_code == 0
    engine = create_engine(database_url(empty_database, "/unused"))
    try:
        indexes = {index["name"] for index in inspect(engine).get_indexes("tasks")}
        primary_key = inspect(engine).get_pk_constraint("tasks")["constrained_columns"]
    finally:
        engine.dispose()
    assert "ix_tasks_user_id_created_at_id" in indexes
    assert primary_key == ["user_id", "id"]


def test_upgrade_to_tags_keeps_tasks_and_gives_them_none(db_runner, empty_database):
    assert db_runner.invoke(args=["db", "upgrade", "0004"]).exit_code == 0
    engine = create_engine(database_url(empty_database, "/unused"))
    task_id = uuid.uuid4()
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO tasks (user_id, id, title, is_completed, priority, created_at,"
                    " updated_at, version) VALUES ('alice', :id, 'kept', false, 1,"
                    " '2026-01-01 00:00:00', '2026-01-01 00:00:00', 1)"
                ),
                {"id": task_id.hex if engine.dialect.name == "sqlite" else str(task_id)},
            )
        result = db_runner.invoke(args=["db", "upgrade"])
        assert result.exit_code == 0, result.output
        with engine.connect() as connection:
            tags = connection.execute(text("SELECT tags, title FROM tasks")).one()
            indexes = {index["name"] for index in inspect(connection).get_indexes("task_tags")}
            foreign_keys = inspect(connection).get_foreign_keys("task_tags")
        assert tags[1] == "kept"
        assert tags[0] in ([], "[]")  # PostgreSQL's driver reads json, SQLite's gives text
        assert "ix_task_tags_user_id_tag_key" in indexes
        assert [
            (key["referred_table"], key["options"].get("ondelete")) for key in foreign_keys
        ] == [("tasks", "CASCADE")]
        result = db_runner.invoke(args=["db", "downgrade", "0004"])
        assert result.exit_code == 0, result.output
        with engine.connect() as connection:
            columns = {column["name"] for column in inspect(connection).get_columns("tasks")}
            assert connection.execute(text("SELECT title FROM tasks")).scalar() == "kept"
        assert "tags" not in columns
        assert "task_tags" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("empty_database", ["postgresql"], indirect=True)
def test_postgresql_gets_trigram_indexes_for_search(db_runner, empty_database):
    assert db_runner.invoke(args=["db", "upgrade"]).exit_code == 0
    engine = create_engine(database_url(empty_database, "/unused"))
    try:
        indexes = {index["name"] for index in inspect(engine).get_indexes("tasks")}
    finally:
        engine.dispose()
    assert {"ix_tasks_title_trgm", "ix_tasks_description_trgm"} <= indexes
    assert db_runner.invoke(args=["db", "check"]).exit_code == 0


# --- hosts that migrate at the same moment ------------------------------------------


@pytest.fixture(params=["postgresql", "pgbouncer"])
def migration_target(request, tmp_path):
    """An empty schema, and the URL that hosts migrating it use: straight to PostgreSQL,
    or through PgBouncer in transaction pooling (deploy/pgbouncer.ini), whose server
    connections get the schema as their search_path."""
    with new_postgres_schema() as (admin, schema):
        direct = admin.url.render_as_string(hide_password=False)
        if request.param == "postgresql":
            yield admin, schema, in_schema(direct, schema)
            return
        with run_pgbouncer(tmp_path, direct, f"SET search_path = {schema}") as url:
            yield admin, schema, url


@pytest.fixture
def start_upgrade(tmp_path):
    """`start_upgrade(url, name)`: `flask db upgrade` as a host runs it, in a process of its
    own, its connections named `name` in pg_stat_activity; stopped by the end of the test."""
    started = []

    def start(url: str, name: str) -> subprocess.Popen:
        named = make_url(url).update_query_dict({"application_name": name})
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": named.render_as_string(hide_password=False),
            "BETTER_AUTH_SECRET": HS_SECRET,
        }
        command = ["flask", "--app", "wsgi", "db", "upgrade", "-d", str(ROOT / "migrations")]
        started.append(
            subprocess.Popen(
                [sys.executable, "-m", *command],
                cwd=tmp_path,  # no developer's .env
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        return started[-1]

    yield start
    for process in started:
        stop(process)


def wait_until_waiting(admin: Engine, sql: str, name: str, count: int, upgrades: list) -> None:
    """Poll until `sql` counts `count` of the upgrades' connections, named `name`, waiting."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with admin.connect() as connection:
            waiting = connection.execute(text(sql), {"name": name, "key": MIGRATION_LOCK_KEY})
            if waiting.scalar() >= count:
                return
        ended = [upgrade.communicate()[0] for upgrade in upgrades if upgrade.poll() is not None]
        assert not ended, f"an upgrade ended instead of waiting: {ended}"
        assert time.monotonic() < deadline, f"fewer than {count} upgrades waiting on a lock"
        time.sleep(0.05)  # the interval between two looks, not a synchronisation


WAITING_ON_A_LOCK = """
    SELECT count(*) FROM pg_stat_activity
    WHERE application_name = :name AND wait_event_type = 'Lock'
"""
WAITING_ON_THE_MIGRATION_LOCK = """
    SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid)
    WHERE application_name = :name AND locktype = 'advisory' AND NOT granted
      AND (classid::bigint << 32 | objid::bigint) = :key
"""


def finished(upgrades: list[subprocess.Popen]) -> list[tuple[int, str]]:
    return [(upgrade.wait(timeout=START_TIMEOUT), upgrade.communicate()[0]) for upgrade in upgrades]


def migrated_schema(admin: Engine, schema: str) -> tuple[set[str], list[str]]:
    """The schema's tables, and the rows of its alembic_version."""
    with admin.connect() as connection:
        versions = connection.scalars(
            select(table("alembic_version", column("version_num"), schema=schema).c.version_num)
        )
        return set(inspect(connection).get_table_names(schema=schema)), list(versions)


HEAD = ScriptDirectory(str(ROOT / "migrations")).get_current_head()


def test_two_hosts_upgrading_at_the_same_moment_both_succeed(migration_target, start_upgrade):
    admin, schema, url = migration_target
    name = f"race-{uuid.uuid4().hex[:8]}"
    with admin.connect() as holder:
        # The race, made certain: this table, not yet committed, is invisible to both
        # upgrades, so each finds an empty schema and sets out to create it. Without
        # the migration lock both then wait at CREATE TABLE alembic_version, and once
        # the holder gives up, one builds the schema and the other fails on its tables.
        transaction = holder.begin()
        holder.execute(text(f'CREATE TABLE "{schema}".alembic_version (version_num text)'))
        upgrades = [start_upgrade(url, name) for _ in range(2)]
        wait_until_waiting(admin, WAITING_ON_A_LOCK, name, 2, upgrades)
        transaction.rollback()
    results = finished(upgrades)
    failures = "".join(output for status, output in results if status)
    assert [status for status, _ in results] == [0, 0], failures
    tables, versions = migrated_schema(admin, schema)
    assert tables == HEAD_TABLES
    assert versions == [HEAD]


def test_an_upgrade_waits_while_another_holds_the_migration_lock(migration_target, start_upgrade):
    admin, schema, url = migration_target
    name = f"waits-{uuid.uuid4().hex[:8]}"
    with admin.connect() as holder:
        transaction = holder.begin()
        holder.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        upgrade = start_upgrade(url, name)
        wait_until_waiting(admin, WAITING_ON_THE_MIGRATION_LOCK, name, 1, [upgrade])
        assert inspect(admin).get_table_names(schema=schema) == []  # it changed nothing yet
        transaction.rollback()
    [(status, output)] = finished([upgrade])
    assert status == 0, output
    tables, versions = migrated_schema(admin, schema)
    assert tables == HEAD_TABLES
    assert versions == [HEAD]


# --- 0005: due dates -------------------------------------------------------------

TASK_ROW = text(
    "INSERT INTO tasks (user_id, id, title, is_completed, priority, created_at, updated_at,"
    " version) VALUES ('alice', :id, 'kept', false, 1, :at, :at, 1)"
)


def columns_and_indexes(url: str) -> tuple[set[str], set[str]]:
    engine = create_engine(database_url(url, "/unused"))
    try:
        inspector = inspect(engine)
        columns = {column["name"] for column in inspector.get_columns("tasks")}
        return columns, {index["name"] for index in inspector.get_indexes("tasks")}
    finally:
        engine.dispose()


def test_0005_adds_due_at_and_its_index_and_its_downgrade_removes_them(db_runner, empty_database):
    assert db_runner.invoke(args=["db", "upgrade", "0004"]).exit_code == 0
    engine = create_engine(database_url(empty_database, "/unused"))
    task_id = uuid.uuid4()
    moment = "2026-01-17 09:30:00"
    try:
        with engine.begin() as connection:
            connection.execute(TASK_ROW, {"id": task_id.hex, "at": moment})

        result = db_runner.invoke(args=["db", "upgrade"])
        assert result.exit_code == 0, result.output
        columns, indexes = columns_and_indexes(empty_database)
        assert "due_at" in columns
        assert "ix_tasks_user_id_due_at_id" in indexes
        with engine.begin() as connection:
            titles = connection.execute(text("SELECT title, due_at FROM tasks")).all()
            assert [tuple(each) for each in titles] == [("kept", None)]  # existing tasks undated
            connection.execute(text("UPDATE tasks SET due_at = :at"), {"at": moment})

        result = db_runner.invoke(args=["db", "downgrade", "0004"])
        assert result.exit_code == 0, result.output
        columns, indexes = columns_and_indexes(empty_database)
        assert "due_at" not in columns
        assert "ix_tasks_user_id_due_at_id" not in indexes
        with engine.begin() as connection:
            assert connection.execute(text("SELECT title FROM tasks")).scalars().all() == ["kept"]
    finally:
        engine.dispose()


# --- the change feed's migration, on a database with tasks in it ----------------------

OLD_TASKS = table(
    "tasks",
    column("user_id", String),
    column("id", Uuid),
    column("title", String),
    column("is_completed", Boolean),
    column("priority", Integer),
    column("created_at", DateTime),
    column("updated_at", DateTime),
    column("version", Integer),
)


def test_the_change_feed_migration_numbers_existing_tasks_per_user(db_runner, empty_database):
    assert db_runner.invoke(args=["db", "upgrade", "0004"]).exit_code == 0
    base = datetime(2026, 1, 1)
    rows = [
        # (user, id, minutes after base): numbered per user by updated_at, then id.
        ("alice", uuid.UUID(int=3), 5),
        ("alice", uuid.UUID(int=1), 9),
        ("alice", uuid.UUID(int=2), 5),
        ("bob", uuid.UUID(int=4), 1),
    ]
    engine = create_engine(database_url(empty_database, "/unused"))
    try:
        with engine.begin() as connection:
            connection.execute(
                OLD_TASKS.insert(),
                [
                    {
                        "user_id": user,
                        "id": task_id,
                        "title": "Old",
                        "is_completed": False,
                        "priority": 1,
                        "created_at": base,
                        "updated_at": base + timedelta(minutes=minutes),
                        "version": 1,
                    }
                    for user, task_id, minutes in rows
                ],
            )
        result = db_runner.invoke(args=["db", "upgrade"])
        assert result.exit_code == 0, result.output
        with engine.connect() as connection:
            numbered = connection.execute(
                text("SELECT user_id, id, change_seq FROM tasks ORDER BY user_id, change_seq")
            ).all()
            counters = connection.execute(
                text("SELECT user_id, last_seq, purged_seq FROM change_counters ORDER BY user_id")
            ).all()
        assert [(user, uuid.UUID(str(task_id)).int, seq) for user, task_id, seq in numbered] == [
            ("alice", 2, 1),
            ("alice", 3, 2),
            ("alice", 1, 3),
            ("bob", 4, 1),
        ]
        assert [tuple(row) for row in counters] == [("alice", 3, 0), ("bob", 1, 0)]

        result = db_runner.invoke(args=["db", "downgrade", "0004"])
        assert result.exit_code == 0, result.output
        assert table_names(empty_database) == {"tasks", "idempotency_keys", "alembic_version"}
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM tasks")).scalar() == 4
            columns = {column["name"] for column in inspect(connection).get_columns("tasks")}
        assert "change_seq" not in columns
    finally:
        engine.dispose()
