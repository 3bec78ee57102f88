"""The migrations build the schema from empty, remove it again, and match the models."""

import uuid

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from taskapp import create_app
from taskapp.config import database_url
from tests.conftest import postgres_url_or_skip
from tests.support import HS_SECRET


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path):
    """A URL to a database with nothing in it: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.sqlite3'}"
        return
    base = make_url(database_url(postgres_url_or_skip(), "/unused"))
    schema = f"migrations_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


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


def test_upgrade_builds_the_schema_from_empty(db_runner, empty_database):
    result = db_runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert table_names(empty_database) == {"tasks", "idempotency_keys", "alembic_version"}


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
