"""Fixtures: one app per test on SQLite and on PostgreSQL, with real signed tokens.

PostgreSQL runs when TEST_DATABASE_URL names a database the tests may fill and
empty. Without it the PostgreSQL half is skipped on a laptop, and fails in CI.
Modules marked `through_pgbouncer` run a third time, on the same database through
a private PgBouncer in transaction pooling (deploy/pgbouncer.ini), as a deployment
on several hosts reaches PostgreSQL.
"""

from __future__ import annotations

import os

import flask_migrate
import pytest
from sqlalchemy import delete, event

from taskapp import create_app
from taskapp.config import SETTINGS
from taskapp.extensions import db
from taskapp.models import ChangeCounter, IdempotencyKey, Task, TaskTag, TaskTombstone
from tests.support import (
    HS_SECRET,
    KeyServer,
    SigningKey,
    bearer,
    hs256_token,
    run_pgbouncer,
    served,
    unavailable,
)

DATABASES = ("sqlite", "postgresql")
PGBOUNCER = "pgbouncer"  # PostgreSQL through PgBouncer, for modules marked through_pgbouncer


@pytest.fixture(scope="session", autouse=True)
def clean_environment():
    with pytest.MonkeyPatch.context() as patch:
        # Whatever a developer's shell or .env carries, tests choose their own settings.
        for name in SETTINGS:
            patch.delenv(name, raising=False)
        # Tests send many requests as one user from one address: rate limits are off
        # unless a test turns them on (tests/test_rate_limits.py). Set in the
        # environment, so apps under gunicorn started by a test inherit it too.
        patch.setenv("RATELIMIT_ENABLED", "false")
        # Production serves only the hosts in TRUSTED_HOSTS: the test client's host, the
        # servers tests start on 127.0.0.1, and the name the deploy and proxy tests use.
        patch.setenv("TRUSTED_HOSTS", "localhost,127.0.0.1,api.example.com")
        yield


def postgres_url_or_skip() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    unavailable("PostgreSQL tests", "TEST_DATABASE_URL=postgresql://user@host/empty_database")


def pytest_generate_tests(metafunc):
    """A test that takes `database_url` runs on each of DATABASES, and through PgBouncer
    too in a module marked `through_pgbouncer`; one that parametrizes `database_url`
    itself runs on the ones it names."""
    if "database_url" not in metafunc.fixturenames or any(
        "database_url" in (mark.args[0] if mark.args else mark.kwargs["argnames"])
        for mark in metafunc.definition.iter_markers("parametrize")
    ):
        return
    databases = list(DATABASES)
    if metafunc.definition.get_closest_marker("through_pgbouncer"):
        databases.append(PGBOUNCER)
    metafunc.parametrize("database_url", databases, indirect=True, scope="session")


@pytest.fixture(scope="session")
def pgbouncer_url(tmp_path_factory):
    """The PostgreSQL test database through a private PgBouncer in transaction pooling."""
    with run_pgbouncer(tmp_path_factory.mktemp("pgbouncer"), postgres_url_or_skip()) as url:
        yield url


@pytest.fixture(scope="session")
def database_url(request, tmp_path_factory):
    """A database with the schema built by the migrations, once per backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'tasks.sqlite3'}"
    elif request.param == PGBOUNCER:
        # The same database as "postgresql": pytest finishes one before it starts the other.
        url = request.getfixturevalue("pgbouncer_url")
    else:
        url = postgres_url_or_skip()
    app = create_app({"DATABASE_URL": url, "BETTER_AUTH_SECRET": HS_SECRET})
    with app.app_context():
        flask_migrate.downgrade(revision="base")
        flask_migrate.upgrade()
        # Tests may drop the database's connections (tests/test_stale_connections.py):
        # the schema is removed over a fresh one.
        db.engine.dispose()
    yield url
    with app.app_context():
        flask_migrate.downgrade(revision="base")
        db.engine.dispose()


@pytest.fixture
def make_app(database_url):
    """Build an app on the test database with settings given by variable name."""
    built = []

    def make(**settings):
        app = create_app({"DATABASE_URL": database_url, **settings})
        app.config["TESTING"] = True
        built.append(app)
        return app

    yield make
    for index, app in enumerate(built):
        with app.app_context():
            if index == 0:  # every app shares the database: empty it once
                db.session.execute(delete(IdempotencyKey))
                db.session.execute(delete(TaskTag))  # SQLite does not cascade (models.py)
                db.session.execute(delete(Task))
                db.session.execute(delete(TaskTombstone))
                db.session.execute(delete(ChangeCounter))
                db.session.commit()
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(make_app):
    """The app as a deployment with a shared HS256 secret runs it."""
    return make_app(BETTER_AUTH_SECRET=HS_SECRET)


@pytest.fixture
def auth():
    """`auth("alice", **claims)`: headers with a fresh HS256 token for that user.

    Claims (and `secret`) as `hs256_token` takes them; `bearer(token)` sends any other token.
    """
    return lambda user="alice", **claims: bearer(hs256_token(user, **claims))


@pytest.fixture
def create_task(client, auth):
    """Create a task through the API and return its JSON."""

    def create(user="alice", **fields):
        response = client.post(
            f"/api/{user}/tasks", json={"title": "A task", **fields}, headers=auth(user)
        )
        assert response.status_code == 201, response.json
        return response.json

    return create


@pytest.fixture
def http_server(app):
    """The app behind a real HTTP server on 127.0.0.1; yields its base URL."""
    with served(app) as base_url:
        yield base_url


@pytest.fixture
def statements(app):
    """The SQL each request sends, and whether its connection was in autocommit."""
    sent = []

    def record(connection, _cursor, statement, _parameters, _context, _executemany):
        options = connection.get_execution_options()
        sent.append((statement, options.get("isolation_level") == "AUTOCOMMIT"))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def key_server():
    """A JWKS served over real HTTP on 127.0.0.1."""
    with KeyServer() as server:
        yield server


@pytest.fixture
def signing_key(key_server):
    """An EdDSA key (Better Auth's default) published by `key_server`."""
    key = SigningKey("EdDSA")
    key_server.publish(key)
    return key
