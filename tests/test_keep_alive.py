"""Kept-alive connections after answers given before the request body was read, under gunicorn.

gunicorn as deployed (gunicorn.conf.py: gthread workers, which keep connections alive),
on a port, spoken to as a client that keeps its connection does: `http.client`, which
sends the whole request, reads the answer, sends the next request on the same connection
unless the answer said `Connection: close`, and connects again when it did. Each case
runs many times over, so that an answer lost to a reset, or a connection closed after
it was said to stay open, shows up without depending on timing.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import HS_SECRET, Gunicorn, bearer, hs256_token, run_gunicorn

LIMIT = 64 * 1024  # MAX_BODY_BYTES' default
ROUNDS = 25
REQUEST_TIMEOUT = 15  # seconds: an answer that takes longer counts as never given


def json_body(size: int) -> bytes:
    """A JSON task of exactly `size` bytes."""
    head, tail = b'{"title": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def chunks(body: bytes, size: int = 8 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@dataclass
class Case:
    status: int
    method: str
    path: str
    body: bytes
    # Whose fresh token the request carries (minted as it is sent: a token made at
    # import could expire before a long suite reaches this file).
    user: str | None = None
    chunked: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    # Over the limit, the rest of the body is not read: the connection must close.
    closes: bool = False


ALICE = "alice"
# Bodies the app answers before reading are as large as it accepts (LIMIT): more than
# gunicorn reads of an unread body by itself (less than 64 KiB) before it closes the
# connection. Those over the limit leave more than that unread, after what the app read.
CASES = {
    "413-by-content-length": Case(
        413, "POST", "/api/alice/tasks", json_body(LIMIT + 1024), ALICE, closes=True
    ),
    "413-while-reading-a-chunked-body": Case(
        413,
        "POST",
        "/api/alice/tasks",
        json_body(2 * LIMIT + 1024),
        ALICE,
        chunked=True,
        closes=True,
    ),
    "401-before-the-body": Case(401, "POST", "/api/alice/tasks", json_body(LIMIT)),
    "403-before-the-body": Case(403, "POST", "/api/alice/tasks", json_body(LIMIT), "bob"),
    "404-before-the-body": Case(404, "POST", "/api/alice/nothing-here", json_body(LIMIT)),
    "405-before-the-body": Case(405, "PUT", "/api/alice/tasks", json_body(LIMIT), ALICE),
    "429-before-the-body": Case(
        429,
        "POST",
        "/api/alice/tasks",
        json_body(LIMIT),
        settings={"RATELIMIT_ENABLED": "true", "RATELIMIT_PER_IP": "1/hour"},
    ),
    "chunked-405-before-the-body": Case(
        405, "PUT", "/api/alice/tasks", json_body(LIMIT), ALICE, chunked=True
    ),
}


@pytest.fixture
def server(tmp_path: Path, case: str) -> Iterator[Gunicorn]:
    """gunicorn with `case`'s settings, on a port."""
    env = {
        "GUNICORN_WORKERS": "1",
        # No request here reaches the database.
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
        "BETTER_AUTH_SECRET": HS_SECRET,
        **CASES[case].settings,
    }
    with run_gunicorn(tmp_path, env=env) as started:
        yield started


def send(connection: http.client.HTTPConnection, case: Case) -> http.client.HTTPResponse:
    headers = {"Content-Type": "application/json"}
    if case.user:
        headers.update(bearer(hs256_token(case.user)))
    if case.chunked:
        connection.request(
            case.method, case.path, body=chunks(case.body), headers=headers, encode_chunked=True
        )
    else:
        connection.request(case.method, case.path, body=case.body, headers=headers)
    return connection.getresponse()


@pytest.mark.parametrize("case", CASES)
def test_an_answer_before_the_body_arrives_whole_and_the_next_request_is_served(server, case):
    case = CASES[case]
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT)
    if case.status == 429:
        send(connection, case).read()  # the address's one allowed request
    try:
        for _ in range(ROUNDS):
            response = send(connection, case)
            content = response.read()
            assert response.status == case.status
            assert json.loads(content)["detail"]  # the whole answer, in the error shape
            # The next request goes on the same connection when it was said to stay
            # open, on a new one when it was said to close (http.client reconnects).
            connection.request("GET", "/healthz")
            follow_up = connection.getresponse()
            assert (follow_up.status, json.loads(follow_up.read())) == (200, {"status": "ok"})
            said = response.headers["Connection"]
            assert said == ("close" if case.closes else "keep-alive")
    finally:
        connection.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_servers_other_than_gunicorn_are_told_to_close_in_the_answer(app, auth):
    # Werkzeug's server (`flask run`) closes when the answer says so; gunicorn is told
    # through its own response object instead, as it drops the header.
    client = app.test_client()
    json_type = {"Content-Type": "application/json"}
    refused = client.post(
        "/api/alice/tasks", data=json_body(LIMIT + 1), headers={**json_type, **auth("alice")}
    )
    assert refused.status_code == 413
    assert refused.headers["Connection"] == "close"
    read_first = client.post("/api/alice/tasks", data=json_body(LIMIT), headers=json_type)
    assert read_first.status_code == 401
    assert "Connection" not in read_first.headers
