"""Rate limits: per user once the token is verified, per client IP before that.

The suite runs with limits off (tests/conftest.py); every test here turns them
on; each app counts in its own storage. The Redis tests run the app under gunicorn: two
worker processes sharing one count is what Redis storage is for.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from limits.storage import MemoryStorage

from taskapp import create_app
from taskapp.config import ConfigError
from taskapp.web import ratelimit
from taskapp.web.ratelimit import EXTENSION, RateLimits, SweptMemoryStorage
from tests.support import (
    HS_SECRET,
    Gunicorn,
    Log,
    bearer,
    free_port,
    run_gunicorn,
    stop,
    unavailable,
)

FRONTEND = "https://app.example.com"
# The limits do not touch the database: SQLite is enough for every test here.
ON_SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
REDIS_URL = "redis://127.0.0.1:6379/5"
ELSEWHERE = {"REMOTE_ADDR": "198.51.100.7"}  # another client than the test client's 127.0.0.1


@pytest.fixture
def limited(make_app):
    """`limited(RATELIMIT_PER_USER="3/minute", ...)`: an app with rate limits on."""

    def build(**settings):
        defaults = {"RATELIMIT_PER_USER": "1000/minute", "RATELIMIT_PER_IP": "1000/minute"}
        return make_app(
            BETTER_AUTH_SECRET=HS_SECRET, RATELIMIT_ENABLED="true", **{**defaults, **settings}
        )

    return build


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
def test_over_the_user_limit_is_a_json_429_with_retry_after(limited, auth):
    client = limited(RATELIMIT_PER_USER="3/minute").test_client()
    for _ in range(3):
        assert client.get("/api/alice/tasks", headers=auth("alice")).status_code == 200
    response = client.get("/api/alice/tasks", headers=auth("alice"))
    assert_too_many_requests(response, limit=3, window_seconds=60)
    assert "for this user" in response.json["detail"]
    # Every method counts, and the user stays limited on every endpoint.
    response = client.post("/api/alice/tasks", json={"title": "x"}, headers=auth("alice"))
    assert_too_many_requests(response, limit=3, window_seconds=60)


@ON_SQLITE
def test_one_user_exhausting_their_limit_leaves_another_untouched(limited, auth):
    client = limited(RATELIMIT_PER_USER="3/minute").test_client()
    for _ in range(4):
        client.get("/api/alice/tasks", headers=auth("alice"))
    assert client.get("/api/alice/tasks", headers=auth("alice")).status_code == 429
    response = client.get("/api/bob/tasks", headers=auth("bob"))
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == "2"


@ON_SQLITE
def test_token_guessing_is_limited_per_client_ip(limited, auth):
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
    assert client.get("/api/alice/tasks", headers=auth("alice")).status_code == 429
    other = client.get(
        "/api/alice/tasks",
        headers=auth("alice"),
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )
    assert other.status_code == 200


@ON_SQLITE
def test_authenticated_requests_count_against_the_ip_limit_too(limited, auth):
    client = limited(RATELIMIT_PER_USER="100/minute", RATELIMIT_PER_IP="3/minute").test_client()
    for user in ("alice", "bob", "carol"):
        assert client.get(f"/api/{user}/tasks", headers=auth(user)).status_code == 200
    response = client.get("/api/dave/tasks", headers=auth("dave"))
    assert_too_many_requests(response, limit=3, window_seconds=60)
    assert "from this address" in response.json["detail"]


@ON_SQLITE
def test_answers_carry_the_rate_limit_headers(limited, auth):
    client = limited(RATELIMIT_PER_USER="5/minute").test_client()
    created = client.post("/api/alice/tasks", json={"title": "x"}, headers=auth("alice"))
    listed = client.get("/api/alice/tasks", headers=auth("alice"))
    forbidden = client.get("/api/bob/tasks", headers=auth("alice"))
    missing = client.get(f"/api/alice/tasks/{uuid.uuid4()}", headers=auth("alice"))
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
def test_the_liveness_probe_is_never_counted(limited):
    client = limited(RATELIMIT_PER_IP="2/minute").test_client()
    for _ in range(5):
        response = client.get("/healthz")
        assert response.status_code == 200
        assert not set(RATE_HEADERS) & set(response.headers.keys())
    # None of those used up the address's limit.
    assert client.get("/api/alice/tasks").headers["X-RateLimit-Remaining"] == "1"


# Each kind of request that runs no view, or no authenticated one: (method, path, the
# answer it gets while the address is under its limit, headers).
UNAUTHENTICATED_KINDS = {
    "options": ("OPTIONS", "/api/alice/tasks", 200, {}),
    "preflight": (
        "OPTIONS",
        "/api/alice/tasks",
        200,
        {"Origin": FRONTEND, "Access-Control-Request-Method": "GET"},
    ),
    "no-such-route": ("GET", "/api/alice/nothing-here", 404, {}),
    "made-up-method": ("BREW", "/api/alice/tasks", 405, {}),
    "readiness-probe": ("GET", "/readyz", 200, {}),
}


@ON_SQLITE
@pytest.mark.parametrize("kind", UNAUTHENTICATED_KINDS)
def test_a_flood_of_any_kind_of_request_is_refused_after_the_ip_limit(limited, auth, kind):
    method, path, status, headers = UNAUTHENTICATED_KINDS[kind]
    client = limited(RATELIMIT_PER_IP="3/minute", CORS_ORIGINS=FRONTEND).test_client()
    for left in (2, 1, 0):
        response = client.open(path, method=method, headers=headers)
        assert response.status_code == status
        assert response.headers["X-RateLimit-Remaining"] == str(left)
    for _ in range(3):
        refused = client.open(path, method=method, headers=headers)
        assert_too_many_requests(refused, limit=3, window_seconds=60)
        assert "from this address" in refused.json["detail"]
    # The flood used up the address's allowance for everything else; not another's.
    assert client.get("/api/alice/tasks", headers=auth("alice")).status_code == 429
    other = client.open(path, method=method, headers=headers, environ_base=ELSEWHERE)
    assert other.status_code == status


@ON_SQLITE
@pytest.mark.parametrize("kind", UNAUTHENTICATED_KINDS)
def test_an_exempt_address_is_never_refused(limited, kind):
    method, path, status, headers = UNAUTHENTICATED_KINDS[kind]
    client = limited(
        RATELIMIT_PER_IP="3/minute",
        RATELIMIT_EXEMPT_ADDRESSES="127.0.0.1, 2001:db8::/32",
        CORS_ORIGINS=FRONTEND,
    ).test_client()
    # The test client's own address, an IPv4 client of a dual-stack socket, and IPv6.
    for address in ("127.0.0.1", "::ffff:127.0.0.1", "2001:db8::7"):
        for _ in range(5):
            response = client.open(
                path, method=method, headers=headers, environ_base={"REMOTE_ADDR": address}
            )
            assert response.status_code == status
            assert not set(RATE_HEADERS) & set(response.headers.keys())
    # An address outside the list is still counted.
    for _ in range(3):
        client.open(path, method=method, headers=headers, environ_base=ELSEWHERE)
    refused = client.open(path, method=method, headers=headers, environ_base=ELSEWHERE)
    assert_too_many_requests(refused, limit=3, window_seconds=60)


@ON_SQLITE
def test_an_exempt_address_keeps_its_users_limits(limited, auth):
    client = limited(
        RATELIMIT_PER_USER="2/minute", RATELIMIT_EXEMPT_ADDRESSES="127.0.0.0/8"
    ).test_client()
    for left in (1, 0):
        response = client.get("/api/alice/tasks", headers=auth("alice"))
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Remaining"] == str(left)
    refused = client.get("/api/alice/tasks", headers=auth("alice"))
    assert_too_many_requests(refused, limit=2, window_seconds=60)
    assert "for this user" in refused.json["detail"]


@ON_SQLITE
def test_behind_a_proxy_the_exemption_is_for_the_forwarded_address(limited):
    # nginx on the same host connects from loopback and forwards the client's address:
    # exempting loopback exempts probes made on the host, never the clients nginx serves.
    client = limited(
        PROXY_HOPS="1", RATELIMIT_PER_IP="2/minute", RATELIMIT_EXEMPT_ADDRESSES="127.0.0.1"
    ).test_client()
    probe = {"X-Forwarded-For": "127.0.0.1"}
    for _ in range(4):
        assert client.get("/readyz", headers=probe).status_code == 200
    # A client (as nginx forwards it), even one that claims loopback in its own header.
    for forwarded in ("203.0.113.9", "127.0.0.1, 203.0.113.9"):
        client = limited(
            PROXY_HOPS="1", RATELIMIT_PER_IP="2/minute", RATELIMIT_EXEMPT_ADDRESSES="127.0.0.1"
        ).test_client()
        headers = {"X-Forwarded-For": forwarded}
        assert [client.get("/readyz", headers=headers).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]


@ON_SQLITE
def test_cors_exposes_the_headers_and_429s_are_readable_by_the_page(limited, auth):
    client = limited(RATELIMIT_PER_USER="1/minute", CORS_ORIGINS=FRONTEND).test_client()
    preflight = {
        "Origin": FRONTEND,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    for _ in range(3):  # preflights count against the IP's limit, never the user's
        assert client.options("/api/alice/tasks", headers=preflight).status_code == 200
    headers = {**auth("alice"), "Origin": FRONTEND}
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
def test_rate_limits_can_be_switched_off(make_app, auth):
    client = make_app(
        BETTER_AUTH_SECRET=HS_SECRET, RATELIMIT_ENABLED="false", RATELIMIT_PER_USER="1/minute"
    ).test_client()
    for _ in range(3):
        response = client.get("/api/alice/tasks", headers=auth("alice"))
        assert response.status_code == 200
        assert not set(RATE_HEADERS) & set(response.headers.keys())


def test_a_database_outage_keeps_its_own_retry_after(tmp_path, auth):
    app = create_app(
        {
            # Nothing listens on port 1: connections are refused at once.
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/taskapp",
            "BETTER_AUTH_SECRET": HS_SECRET,
            "RATELIMIT_ENABLED": "true",
        },
        instance_path=str(tmp_path),
    )
    response = app.test_client().get("/api/alice/tasks", headers=auth("alice"))
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
        (
            "RATELIMIT_EXEMPT_ADDRESSES",
            "127.0.0.1, nginx",
            "RATELIMIT_EXEMPT_ADDRESSES: 'nginx' is not an IP address or network",
        ),
        (
            "RATELIMIT_EXEMPT_ADDRESSES",
            "10.0.0.1/8",
            "RATELIMIT_EXEMPT_ADDRESSES: '10.0.0.1/8' has host bits set: the network is 10.0.0.0/8",
        ),
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
    assert app.config["RATELIMIT_EXEMPT_ADDRESSES"] == ()  # nobody, loopback included


# --- Redis, under gunicorn -------------------------------------------------------


@pytest.fixture
def redis_prefix():
    """A key prefix of this test's own in the real Redis; its keys are deleted after."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        client.close()
        unavailable("Redis tests", f"Redis at {REDIS_URL}: {error}")
    prefix = f"taskapp-test-{uuid.uuid4().hex}"
    yield client, prefix
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
    client.close()


# One request at a time per worker (a busy worker leaves the rest to the other), and
# an access log line per answer naming the worker's pid: "<12345> 200 /api/alice/tasks".
OPTIONS = ("--worker-class", "sync", "--threads", "1", "--access-logfile", "-")
ACCESS_FORMAT = ("--access-logformat", "%(p)s %(s)s %(U)s")


def gunicorn(directory: Path, database_url: str, workers: int, **settings: str):
    """The app under gunicorn with rate limits on and `workers` worker processes."""
    return run_gunicorn(
        directory,
        "--workers",
        str(workers),
        *OPTIONS,
        *ACCESS_FORMAT,
        env={
            "DATABASE_URL": database_url,
            "BETTER_AUTH_SECRET": HS_SECRET,
            "RATELIMIT_ENABLED": "true",
            **settings,
        },
    )


def answered(path: str, status: int | None = None) -> str:
    """A pattern for gunicorn's access log lines of answers to `path` (with `status`)."""
    status_pattern = r"\d+" if status is None else str(status)
    return rf"^<(\d+)> {status_pattern} {re.escape(path)}$"


def by_worker(server: Gunicorn, path: str, status: int | None = None) -> Counter:
    """How many answers to `path` (with `status`) each worker pid gave, so far."""
    return Counter(match[1] for match in server.log.matches(answered(path, status)))


def wait_for_answers(server: Gunicorn, path: str, count: int) -> None:
    """Until the access log holds `count` answers to `path` (a line follows its answer)."""
    server.log.wait_for(answered(path), count)


def get(url: str, headers: dict | None = None) -> tuple[int, dict, object]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def get_concurrently(url: str, count: int, headers: dict | None = None) -> list[tuple]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda _: get(url, headers), range(count)))


@ON_SQLITE
def test_redis_shares_the_count_between_two_gunicorn_workers(
    database_url, redis_prefix, tmp_path, auth
):
    """With a limit of L, L requests pass and the next is 429 on whichever worker answers.

    Proof that the count is shared, from gunicorn's access log (each line names the
    worker's pid): both workers answered some of the L allowed requests, so each
    saw fewer than L itself, and then each answered 429 at once. Counting in its
    own memory, a worker that had seen fewer than L would have answered 200.
    """
    client, prefix = redis_prefix
    limit = 40
    api = "/api/alice/tasks"
    alice = auth("alice")
    with gunicorn(
        tmp_path,
        database_url,
        workers=2,
        RATELIMIT_STORAGE_URI=REDIS_URL,
        RATELIMIT_KEY_PREFIX=prefix,
        RATELIMIT_PER_USER=f"{limit}/hour",
        RATELIMIT_PER_IP="100000/hour",
    ) as server:
        # Both workers are up: concurrent probes (exempt from limits) reach each of them.
        probes = 0
        while len(by_worker(server, "/healthz")) < 2 and probes < 400:
            get_concurrently(f"{server.url}/healthz", 8)
            probes += 8
            wait_for_answers(server, "/healthz", probes)
        assert len(by_worker(server, "/healthz")) == 2, "only one gunicorn worker ever answered"

        allowed = get_concurrently(f"{server.url}{api}", limit, alice)
        assert [status for status, _, _ in allowed] == [200] * limit
        wait_for_answers(server, api, limit)
        served = by_worker(server, api, 200)
        assert len(served) == 2, f"one worker answered every allowed request: {served}"

        refused: list[tuple] = []
        while len(by_worker(server, api, 429)) < 2 and len(refused) < 200:
            refused += get_concurrently(f"{server.url}{api}", 8, alice)
            wait_for_answers(server, api, limit + len(refused))
        assert {status for status, _, _ in refused} == {429}
        assert set(by_worker(server, api, 429)) == set(served), "a worker never answered 429"
        _, headers, body = refused[0]
        assert body["detail"].startswith("Too many requests for this user")
        assert 1 <= int(headers["Retry-After"]) <= 3600
        assert headers["X-RateLimit-Limit"] == str(limit)
        assert headers["X-RateLimit-Remaining"] == "0"

    # The count lives in Redis, under this test's prefix.
    keys = [key.decode() for key in client.scan_iter(match=f"{prefix}:*")]
    assert any("alice" in key for key in keys), keys


@ON_SQLITE
def test_requests_are_served_when_redis_is_down(database_url, tmp_path, auth):
    """Redis unreachable: answers keep coming (counted in the worker's memory), and the
    log says so. No Redis server is needed: nothing listens on the port used."""
    unreachable = f"redis://127.0.0.1:{free_port()}/5"
    with gunicorn(
        tmp_path,
        database_url,
        workers=1,
        RATELIMIT_STORAGE_URI=unreachable,
        RATELIMIT_PER_USER="3/hour",
    ) as server:
        url = f"{server.url}/api/alice/tasks"
        answers = [get(url, auth("alice")) for _ in range(4)]
        assert [status for status, _, _ in answers] == [200, 200, 200, 429]
        for remaining, (_, headers, _) in zip(["2", "1", "0"], answers, strict=False):
            assert headers["X-RateLimit-Remaining"] == remaining
        assert get(f"{server.url}/readyz")[0] == 200
        server.log.wait_for("Rate limit storage unreachable")


# --- memory://, swept on the request path -----------------------------------------------


def test_memory_storage_starts_no_thread_per_request(limited, auth, monkeypatch):
    app = limited()
    timers = []
    monkeypatch.setattr(
        "limits.storage.memory.threading.Timer", lambda *args: timers.append(args) or None
    )
    client = app.test_client()
    for _ in range(20):
        assert client.get("/api/alice/tasks", headers=auth("alice")).status_code == 200
    assert timers == []
    assert isinstance(app.extensions[EXTENSION].storage, SweptMemoryStorage)


def test_memory_storage_sweeps_expired_counters_at_most_once_a_second(monkeypatch):
    storage = SweptMemoryStorage()
    storage.incr("gone-soon", expiry=1)
    storage.incr("kept", expiry=3600)
    later = time.time() + 2
    monkeypatch.setattr("limits.storage.memory.time.time", lambda: later)
    # Within the second since the last sweep, nothing is swept yet...
    storage.incr("another", expiry=3600)
    assert "gone-soon" in storage.storage
    # ...and after it, the next hit sweeps what expired.
    monkeypatch.setattr(SweptMemoryStorage, "SWEEP_SECONDS", 0)
    storage.incr("another", expiry=3600)
    assert "gone-soon" not in storage.storage
    assert storage.get("kept") == 1


def test_the_memory_storage_hook_it_replaces_still_exists():
    # limits calls these private methods itself; if they are renamed, taskapp's
    # sweep would silently stop replacing the timer thread.
    assert callable(getattr(MemoryStorage, "_MemoryStorage__schedule_expiry", None))


def test_the_sweep_is_safe_beside_requests_reading_and_dropping_counters(monkeypatch):
    # Requests' reads drop expired counters while a sweep walks them: no thread may fail
    # (a failure would make the limiter give up the storage and start every count anew).
    monkeypatch.setattr(SweptMemoryStorage, "SWEEP_SECONDS", 0)
    storage = SweptMemoryStorage()
    failures = []

    def hammer(worker: int) -> None:
        try:
            for n in range(3000):
                key = f"{worker}-{n % 50}"
                storage.incr(key, expiry=0.0001)
                storage.get(key)
        except Exception as error:
            failures.append(error)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(hammer, range(4)))
    assert failures == []


# --- windows and storage outages, in process -----------------------------------------


@ON_SQLITE
def test_the_reset_is_the_end_of_a_window_aligned_to_the_clock(limited, auth):
    # Aligned windows are what lets one increment per limit answer everything: the
    # window's end follows from the clock, with no second question to the storage.
    client = limited(RATELIMIT_PER_USER="100/minute").test_client()
    before = time.time()
    response = client.get("/api/alice/tasks", headers=auth("alice"))
    reset = int(response.headers["X-RateLimit-Reset"])
    assert reset % 60 == 0
    assert before < reset <= before + 60


@ON_SQLITE
def test_with_several_limits_the_headers_and_the_429_name_the_tightest(limited, auth):
    client = limited(RATELIMIT_PER_USER="2/hour;1000/day").test_client()
    first = client.get("/api/alice/tasks", headers=auth("alice"))
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    client.get("/api/alice/tasks", headers=auth("alice"))
    refused = client.get("/api/alice/tasks", headers=auth("alice"))
    assert_too_many_requests(refused, limit=2, window_seconds=3600)
    assert "(limit: 2 per 1 hour)" in refused.json["detail"]


@pytest.fixture
def private_redis(tmp_path):
    """A Redis server of this test's own on a free port: `start()` and `stop()` it."""
    if shutil.which("redis-server") is None:
        unavailable("Redis outage tests", "redis-server is not installed")
    port = free_port()
    processes: list[subprocess.Popen] = []

    class Server:
        url = f"redis://127.0.0.1:{port}/0"

        def start(self) -> None:
            process = subprocess.Popen(
                [
                    *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", str(tmp_path)),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            processes.append(process)
            Log(process.stdout).wait_for("Ready to accept connections")

        def stop(self) -> None:
            stop(processes.pop())

        def client(self) -> redis.Redis:
            return redis.Redis.from_url(self.url)

    server = Server()
    yield server
    while processes:
        server.stop()


def limits_counting_in(url: str, clock) -> RateLimits:
    return RateLimits(
        {
            "RATELIMIT_PER_IP": "1000/hour",
            "RATELIMIT_PER_USER": "1000/hour",
            "RATELIMIT_STORAGE_URI": url,
            "RATELIMIT_KEY_PREFIX": "outage",
            "RATELIMIT_EXEMPT_ADDRESSES": (),
        },
        monotonic=clock,
    )


def test_counting_returns_to_redis_when_it_is_back(private_redis, caplog):
    now = [1000.0]
    private_redis.start()
    limits = limits_counting_in(private_redis.url, clock=lambda: now[0])
    assert limits.count(limits.per_user, "user", "alice").count == 1
    assert private_redis.client().keys("outage:*")

    private_redis.stop()
    with caplog.at_level(logging.WARNING, logger=ratelimit.__name__):
        # Down: counted in memory (a fresh count), and said once.
        assert limits.count(limits.per_user, "user", "alice").count == 1
        assert limits.count(limits.per_user, "user", "alice").count == 2
    said = [record.message for record in caplog.records]
    assert len(said) == 1
    assert said[0].startswith("Rate limit storage unreachable")

    private_redis.start()  # empty: the server keeps nothing on disk
    caplog.clear()
    # Until the retry time, memory keeps counting without asking Redis...
    assert limits.count(limits.per_user, "user", "alice").count == 3
    assert not private_redis.client().keys("outage:*")
    # ...after it, Redis counts again.
    now[0] += ratelimit.STORAGE_RETRY_SECONDS
    with caplog.at_level(logging.WARNING, logger=ratelimit.__name__):
        assert limits.count(limits.per_user, "user", "alice").count == 1
    assert private_redis.client().keys("outage:*")
    assert "reachable again" in caplog.records[-1].message


# --- Redis going away and coming back, under load through gunicorn ----------------------

LOAD_THREADS = 4
# Bounds, so a broken fallback or recovery fails instead of hanging: each worker tries
# Redis again STORAGE_RETRY_SECONDS after it failed, well within these.
OUTAGE_DEADLINE = 60
MOST_REQUESTS = 20_000  # a bound on the load, whatever happens
BATCH = 16


def counted_in_redis(client: redis.Redis, user: str) -> int:
    """The user's requests counted in Redis: every window's count (a window may turn)."""
    return sum(int(client.get(key) or 0) for key in client.scan_iter(match=f"*/{user}/*"))


@ON_SQLITE
def test_redis_going_away_and_coming_back_under_load(database_url, private_redis, tmp_path, auth):
    """Redis stops while requests stream through gunicorn (as deployed: two workers of
    four threads), then comes back.

    While it is down every request is answered, with the rate-limit headers (each
    worker counts in its own memory). Once it is back the workers return to it by
    themselves: within a bound, every request answered is counted in Redis again.
    """
    private_redis.start()
    redis_client = private_redis.client()
    alice = auth("alice", lifetime=3600)
    answers: list[tuple[str, int | str, bool]] = []  # (phase, status, carried the headers)
    phase = ["up"]
    lock = threading.Lock()
    stop_load = threading.Event()

    def ask(url: str) -> tuple[int | str, bool]:
        try:
            status, headers, _ = get(url, alice)
        except (OSError, ValueError) as error:  # no answer, or not JSON
            return f"no answer: {error!r}", False
        return status, "X-RateLimit-Remaining" in headers

    def load(url: str) -> None:
        while not stop_load.is_set() and len(answers) < MOST_REQUESTS:
            status, headers = ask(url)
            with lock:
                answers.append((phase[0], status, headers))

    def answered_in(name: str) -> int:
        with lock:
            return sum(1 for answer in answers if answer[0] == name)

    def wait_until(condition, what: str) -> None:
        deadline = time.monotonic() + OUTAGE_DEADLINE
        while not condition():
            assert time.monotonic() < deadline, f"{what} within {OUTAGE_DEADLINE} s"
            time.sleep(0.05)  # polling a condition, with a deadline

    with run_gunicorn(
        tmp_path,
        "--workers",
        "2",
        env={
            "DATABASE_URL": database_url,
            "BETTER_AUTH_SECRET": HS_SECRET,
            "RATELIMIT_ENABLED": "true",
            "RATELIMIT_STORAGE_URI": private_redis.url,
            "RATELIMIT_KEY_PREFIX": "outage",
            "RATELIMIT_PER_USER": "100000/hour",
            "RATELIMIT_PER_IP": "100000/hour",
        },
    ) as server:
        url = f"{server.url}/api/alice/tasks"
        loaders = [threading.Thread(target=load, args=(url,)) for _ in range(LOAD_THREADS)]
        for loader in loaders:
            loader.start()
        try:
            wait_until(lambda: counted_in_redis(redis_client, "alice") >= 20, "no count in Redis")

            private_redis.stop()
            with lock:
                phase[0] = "down"
            server.log.wait_for("Rate limit storage unreachable", timeout=OUTAGE_DEADLINE)
            served = answered_in("down")
            wait_until(lambda: answered_in("down") >= served + 20, "no answers while down")

            private_redis.start()  # empty: it keeps nothing on disk
            redis_client = private_redis.client()
            with lock:
                phase[0] = "back"
            server.log.wait_for("Rate limit storage reachable again", timeout=OUTAGE_DEADLINE)
        finally:
            stop_load.set()
            for loader in loaders:
                loader.join()

        # Back in Redis, every worker: a batch of concurrent requests (spread over the
        # workers) is counted there in full. Until each worker has tried Redis again,
        # the ones it answers are counted in its memory instead.
        def batch_counted_in_redis() -> bool:
            before = counted_in_redis(redis_client, "alice")
            with ThreadPoolExecutor(max_workers=8) as pool:
                batch = list(pool.map(lambda _: ask(url), range(BATCH)))
            with lock:
                answers.extend(("back", status, headers) for status, headers in batch)
            return counted_in_redis(redis_client, "alice") - before == BATCH

        wait_until(batch_counted_in_redis, "requests not all counted in Redis again")

    statuses = Counter((name, status) for name, status, _ in answers)
    assert {status for _, status in statuses} == {200}, statuses
    assert all(headers for _, _, headers in answers), "an answer without the rate-limit headers"
    assert {name for name, _ in statuses} == {"up", "down", "back"}, statuses
    assert "Traceback" not in "".join(server.log.lines)
