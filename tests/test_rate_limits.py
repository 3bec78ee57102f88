"""Rate limits: per user once the token is verified, per client IP before that.

The suite runs with limits off (tests/conftest.py); every test here turns them
on. Flask-Limiter keeps its storage on one process-wide object, so each test
builds exactly one limited app.
"""

from __future__ import annotations

import time
import uuid

import pytest

from taskapp import create_app
from taskapp.config import ConfigError
from tests.support import HS_SECRET, bearer, hs256_token

FRONTEND = "https://app.example.com"
# The limits do not touch the database: SQLite is enough for every test here.
ON_SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@pytest.fixture
def limited(make_app):
    """`limited(RATELIMIT_PER_USER="3/minute", ...)`: an app with rate limits on."""

    def build(**settings):
        defaults = {"RATELIMIT_PER_USER": "1000/minute", "RATELIMIT_PER_IP": "1000/minute"}
        return make_app(
            BETTER_AUTH_SECRET=HS_SECRET, RATELIMIT_ENABLED="true", **{**defaults, **settings}
        )

    return build


def as_user(user: str) -> dict:
    return bearer(hs256_token(user))


def assert_too_many_requests(response, limit: int, window_seconds: int):
    assert response.status_code == 429
    assert response.mimetype == "application/json"
    assert set(response.json) == {"detail"}
    assert response.json["detail"].startswith("Too many requests")
    assert 1 <= int(response.headers["Retry-After"]) <= window_seconds
    assert response.headers["X-RateLimit-Limit"] == str(limit)
    assert response.headers["X-RateLimit-Remaining"] == "0"
    reset = int(response.headers["X-RateLimit-Reset"])
    assert time.time() < reset <= time.time() + window_seconds + 1


@ON_SQLITE
def test_over_the_user_limit_is_a_json_429_with_retry_after(limited):
    client = limited(RATELIMIT_PER_USER="3/minute").test_client()
    for _ in range(3):
        assert client.get("/api/alice/tasks", headers=as_user("alice")).status_code == 200
    response = client.get("/api/alice/tasks", headers=as_user("alice"))
    assert_too_many_requests(response, limit=3, window_seconds=60)
    assert "for this user" in response.json["detail"]
    # Every method counts, and the user stays limited on every endpoint.
    response = client.post("/api/alice/tasks", json={"title": "x"}, headers=as_user("alice"))
    assert_too_many_requests(response, limit=3, window_seconds=60)


@ON_SQLITE
def test_one_user_exhausting_their_limit_leaves_another_untouched(limited):
    client = limited(RATELIMIT_PER_USER="3/minute").test_client()
    for _ in range(4):
        client.get("/api/alice/tasks", headers=as_user("alice"))
    assert client.get("/api/alice/tasks", headers=as_user("alice")).status_code == 429
    response = client.get("/api/bob/tasks", headers=as_user("bob"))
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == "2"


@ON_SQLITE
def test_token_guessing_is_limited_per_client_ip(limited):
    client = limited(RATELIMIT_PER_IP="3/minute").test_client()
    for guess in range(3):
        response = client.get("/api/alice/tasks", headers=bearer(f"guess-{guess}"))
        assert response.status_code == 401
        assert response.headers["X-RateLimit-Remaining"] == str(2 - guess)
    response = client.get("/api/alice/tasks", headers=bearer("guess-3"))
    assert_too_many_requests(response, limit=3, window_seconds=60)
    assert "from this address" in response.json["detail"]
    # Requests without a token count too, and the address stays throttled even with a
    # valid token; another address is not.
    assert client.get("/api/alice/tasks").status_code == 429
    assert client.get("/api/alice/tasks", headers=as_user("alice")).status_code == 429
    other = client.get(
        "/api/alice/tasks",
        headers=as_user("alice"),
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )
    assert other.status_code == 200


@ON_SQLITE
def test_authenticated_requests_count_against_the_ip_limit_too(limited):
    client = limited(RATELIMIT_PER_USER="100/minute", RATELIMIT_PER_IP="3/minute").test_client()
    for user in ("alice", "bob", "carol"):
        assert client.get(f"/api/{user}/tasks", headers=as_user(user)).status_code == 200
    response = client.get("/api/dave/tasks", headers=as_user("dave"))
    assert_too_many_requests(response, limit=3, window_seconds=60)
    assert "from this address" in response.json["detail"]


@ON_SQLITE
def test_answers_carry_the_rate_limit_headers(limited):
    client = limited(RATELIMIT_PER_USER="5/minute").test_client()
    created = client.post("/api/alice/tasks", json={"title": "x"}, headers=as_user("alice"))
    listed = client.get("/api/alice/tasks", headers=as_user("alice"))
    forbidden = client.get("/api/bob/tasks", headers=as_user("alice"))
    missing = client.get(f"/api/alice/tasks/{uuid.uuid4()}", headers=as_user("alice"))
    answers = [created, listed, forbidden, missing]
    assert [answer.status_code for answer in answers] == [201, 200, 403, 404]
    for answer, remaining in zip(answers, [4, 3, 2, 1], strict=True):
        assert answer.headers["X-RateLimit-Limit"] == "5"
        assert answer.headers["X-RateLimit-Remaining"] == str(remaining)
        assert time.time() < int(answer.headers["X-RateLimit-Reset"]) <= time.time() + 61
        assert "Retry-After" not in answer.headers  # only a 429 (or 503) says when to retry
    # Before authentication the headers describe the client IP's limit.
    unauthenticated = client.get("/api/alice/tasks")
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["X-RateLimit-Limit"] == "1000"


@ON_SQLITE
def test_health_endpoints_are_exempt(limited):
    client = limited(RATELIMIT_PER_IP="2/minute").test_client()
    for _ in range(5):
        for path in ("/healthz", "/readyz"):
            response = client.get(path)
            assert response.status_code == 200
            assert not set(RATE_HEADERS) & set(response.headers.keys())
    # None of those used up the address's limit.
    assert client.get("/api/alice/tasks").headers["X-RateLimit-Remaining"] == "1"


@ON_SQLITE
def test_cors_exposes_the_headers_and_429s_are_readable_by_the_page(limited):
    client = limited(RATELIMIT_PER_USER="1/minute", CORS_ORIGINS=FRONTEND).test_client()
    preflight = {
        "Origin": FRONTEND,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    for _ in range(3):  # preflights use up nothing, and are never refused
        assert client.options("/api/alice/tasks", headers=preflight).status_code == 200
    headers = {**as_user("alice"), "Origin": FRONTEND}
    assert client.get("/api/alice/tasks", headers=headers).status_code == 200
    response = client.get("/api/alice/tasks", headers=headers)
    assert response.status_code == 429
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    exposed = set(response.headers["Access-Control-Expose-Headers"].split(", "))
    assert {"Retry-After", *RATE_HEADERS} <= exposed


@ON_SQLITE
def test_without_authentication_the_path_user_is_limited(limited):
    client = limited(
        APP_ENV="development", AUTH_ENABLED="false", RATELIMIT_PER_USER="1/minute"
    ).test_client()
    assert client.get("/api/alice/tasks").status_code == 200
    assert client.get("/api/alice/tasks").status_code == 429
    assert client.get("/api/bob/tasks").status_code == 200


@ON_SQLITE
def test_rate_limits_can_be_switched_off(make_app):
    client = make_app(
        BETTER_AUTH_SECRET=HS_SECRET, RATELIMIT_ENABLED="false", RATELIMIT_PER_USER="1/minute"
    ).test_client()
    for _ in range(3):
        response = client.get("/api/alice/tasks", headers=as_user("alice"))
        assert response.status_code == 200
        assert not set(RATE_HEADERS) & set(response.headers.keys())


def test_a_database_outage_keeps_its_own_retry_after(tmp_path):
    app = create_app(
        {
            # Nothing listens on port 1: connections are refused at once.
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/taskapp",
            "BETTER_AUTH_SECRET": HS_SECRET,
            "RATELIMIT_ENABLED": "true",
        },
        instance_path=str(tmp_path),
    )
    response = app.test_client().get("/api/alice/tasks", headers=as_user("alice"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"  # not stretched to the limit's window
    assert response.headers["X-RateLimit-Limit"] == "120"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RATELIMIT_PER_USER", "lots", "RATELIMIT_PER_USER must be a rate limit"),
        ("RATELIMIT_PER_IP", "300 per fortnight", "RATELIMIT_PER_IP must be a rate limit"),
        ("RATELIMIT_STORAGE_URI", "memcached://127.0.0.1", "RATELIMIT_STORAGE_URI must be"),
        ("RATELIMIT_ENABLED", "sometimes", "RATELIMIT_ENABLED must be true or false"),
    ],
)
def test_rate_limit_settings_are_checked_at_start_up(name, value, message):
    with pytest.raises(ConfigError, match=message):
        create_app({"BETTER_AUTH_SECRET": HS_SECRET, name: value})


def test_rate_limits_default_to_on_in_memory():
    app = create_app({"BETTER_AUTH_SECRET": HS_SECRET, "RATELIMIT_ENABLED": ""})
    assert app.config["RATELIMIT_ENABLED"] is True
    assert app.config["RATELIMIT_PER_USER"] == "120/minute"
    assert app.config["RATELIMIT_PER_IP"] == "300/minute"
    assert app.config["RATELIMIT_STORAGE_URI"] == "memory://"
