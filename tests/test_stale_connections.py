"""Pooled connections the database dropped: tested before use once idle, never on every request.

The database drops the app's connections (as a restart or a serverless idle timeout
does) by terminating their backends; the machine's PostgreSQL itself keeps running.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from sqlalchemy import create_engine, text

from taskapp import extensions
from taskapp.config import database_url as normalized_url

postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def drop_the_apps_connections(database_url: str) -> int:
    """Terminate every other backend on the test database; returns how many."""
    engine = create_engine(normalized_url(database_url, ""))
    try:
        with engine.connect() as connection:
            return int(
                connection.scalar(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            )
    finally:
        engine.dispose()


def post(base_url: str, title: str, headers: dict) -> tuple[int, dict]:
    """A create over real HTTP, so each request has its own app context and session."""
    request = urllib.request.Request(
        f"{base_url}/api/alice/tasks",
        data=json.dumps({"title": title}).encode(),
        headers={**headers, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


@postgresql_only
def test_a_write_after_an_idle_spell_meets_a_tested_connection(
    http_server, auth, database_url, monkeypatch
):
    assert post(http_server, "before", auth())[0] == 201
    assert drop_the_apps_connections(database_url) >= 1
    # Every pooled connection counts as idle now, as it would after a quiet second.
    monkeypatch.setattr(extensions, "IDLE_SECONDS_BEFORE_PING", 0)
    assert post(http_server, "after", auth())[0] == 201


@postgresql_only
def test_a_busy_connection_is_not_tested_so_a_dropped_one_fails_once_with_503(
    http_server, auth, database_url, monkeypatch
):
    assert post(http_server, "before", auth())[0] == 201
    monkeypatch.setattr(extensions, "IDLE_SECONDS_BEFORE_PING", 3600)  # never idle long enough
    assert drop_the_apps_connections(database_url) >= 1
    status, headers = post(http_server, "lost", auth())
    assert status == 503
    assert headers["Retry-After"]
    # The failure made SQLAlchemy discard the pool's connections: the next write is served.
    assert post(http_server, "after", auth())[0] == 201
