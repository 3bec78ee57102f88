"""Every error, from every layer, is `{"detail": ...}` JSON; none carries a stack trace."""

import json
import logging
import urllib.error
import urllib.request

import pytest

from taskapp import create_app
from tests.support import HS_SECRET

# Nothing listens on port 1: connections are refused at once.
UNREACHABLE_DATABASE = "postgresql://postgres@127.0.0.1:1/taskapp"


def assert_error(response, status):
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert isinstance(response.json["detail"], str)
    assert response.json["detail"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_unknown_route_is_json_404(client):
    assert_error(client.get("/no/such/route"), 404)


def test_method_not_allowed_is_json_405_with_allow(client, auth):
    response = client.post("/api/alice/tasks/00000000-0000-0000-0000-000000000000", headers=auth())
    assert_error(response, 405)
    assert {"GET", "PUT", "DELETE"} <= set(response.headers["Allow"].split(", "))


def test_unexpected_exception_is_a_bare_500_and_logged(app, client, caplog):
    @app.get("/explode")
    def explode():
        raise RuntimeError("secret internals")

    with caplog.at_level(logging.ERROR, logger="taskapp.web.errors"):
        response = client.get("/explode")
    assert_error(response, 500)
    assert response.json == {"detail": "Internal server error."}
    assert "secret internals" not in response.get_data(as_text=True)
    assert any(
        record.exc_info and "secret internals" in str(record.exc_info[1])
        for record in caplog.records
    )


@pytest.fixture
def app_without_database(tmp_path):
    app = create_app(
        {"DATABASE_URL": UNREACHABLE_DATABASE, "BETTER_AUTH_SECRET": HS_SECRET},
        instance_path=str(tmp_path),
    )
    app.config["TESTING"] = True
    return app


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/alice/tasks"),
        ("post", "/api/alice/tasks"),
        ("get", "/api/alice/tasks/00000000-0000-0000-0000-000000000000"),
    ],
)
def test_unreachable_database_is_503_with_retry_after(app_without_database, auth, method, path):
    client = app_without_database.test_client()
    response = getattr(client, method)(
        path, json={"title": "x"} if method == "post" else None, headers=auth()
    )
    assert_error(response, 503)
    assert int(response.headers["Retry-After"]) > 0
    assert "127.0.0.1" not in response.get_data(as_text=True)


def test_healthz_answers_without_the_database(app_without_database):
    response = app_without_database.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_is_503_without_the_database(app_without_database):
    assert_error(app_without_database.test_client().get("/readyz"), 503)


def test_readyz_is_200_with_the_database(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ready"}


def http(method, url, body=None, headers=None):
    """A request over a real socket; returns (status, headers, parsed JSON or None)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, response_headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, response_headers, raw = error.code, error.headers, error.read()
    return status, response_headers, json.loads(raw) if raw else None


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.mark.parametrize("path", ["/api/alice/tasks", "/api/alice/tasks/"])
def test_trailing_slash_is_served_over_http_without_redirect(http_server, auth, path):
    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(http_server + path, headers=auth())
    with opener.open(request, timeout=10) as response:
        assert response.status == 200
        assert json.loads(response.read()) == []


def test_oversized_body_over_http_is_json_413(http_server, auth):
    body = json.dumps({"title": "x", "description": "y" * 70_000}).encode()
    status, _, payload = http(
        "POST",
        f"{http_server}/api/alice/tasks",
        body=body,
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert status == 413
    assert payload == {"detail": "The request body is larger than the limit."}


def test_body_limit_is_configurable(make_app, auth):
    app = make_app(BETTER_AUTH_SECRET=HS_SECRET, MAX_BODY_BYTES="100")
    response = app.test_client().post("/api/alice/tasks", json={"title": "x" * 200}, headers=auth())
    assert_error(response, 413)


def test_malformed_json_over_http_is_json_400(http_server, auth):
    status, headers, payload = http(
        "POST",
        f"{http_server}/api/alice/tasks",
        body=b'{"title": ',
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert payload == {"detail": "The request body is not valid JSON."}


def test_missing_token_over_http_is_401_with_bearer_challenge(http_server):
    status, headers, payload = http("GET", f"{http_server}/api/alice/tasks")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert set(payload) == {"detail"}
