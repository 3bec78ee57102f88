"""What one request spends, layer by layer: CPU microseconds inside the app.

    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1/taskapp_bench python -m bench.request_profile

The app is configured as deployed: EdDSA tokens verified through a JWKS served on
127.0.0.1 (the tests' KeyServer), JSON request logs (to /dev/null), rate limits on
(limits too high to trip). One user gets N_TASKS tasks (default 50; the database must be one the
benchmark may fill, and its tasks for that user are replaced). Each request is
handed to the WSGI app directly, so no HTTP client or server is measured; the
figure is the CPU time of this process (process_time; the wall time, which adds
the wait for PostgreSQL, is printed beside it), and the breakdown comes from
cProfile timing CPU, each function's own time added to its layer (a C function's
to the layers that called it). A profiler slows what it measures, so the layers
are shares of the unprofiled total.
"""

from __future__ import annotations

import collections
import cProfile
import os
import pstats
import sys
import time

import flask_migrate
from sqlalchemy import delete
from werkzeug.test import EnvironBuilder

from taskapp import create_app
from taskapp.extensions import db
from taskapp.models import Task
from tests.support import KeyServer, SigningKey

USER = "bench-profile-user"
HOST = "localhost"  # the test client's, which TRUSTED_HOSTS must name
N_TASKS = int(os.environ.get("N_TASKS", "50"))
REQUESTS = int(os.environ.get("REQUESTS", "500"))

# (layer, what a file path contains), first match wins.
LAYERS = [
    ("JWT verification", ("jwt/", "flask_jwt_extended", "cryptography", "taskapp/auth")),
    ("rate limits", ("limits/", "taskapp/web/ratelimit")),
    ("request log", ("structlog", "logging/", "taskapp/web/logs")),
    ("serialization", ("marshmallow", "orjson", "json/", "taskapp/tasks/schemas")),
    ("SQL and ORM", ("sqlalchemy", "psycopg2", "flask_sqlalchemy", "taskapp/tasks/listing")),
    ("arguments (webargs)", ("webargs",)),
    ("flask-smorest", ("flask_smorest",)),
    ("Flask and Werkzeug", ("flask/", "werkzeug", "flask_cors")),
    ("taskapp views", ("taskapp/",)),
]


def layer_of(filename: str) -> str:
    for name, parts in LAYERS:
        if any(part in filename for part in parts):
            return name
    return "other (standard library)"


def main() -> None:
    url = os.environ.get("BENCH_DATABASE_URL")
    if not url:
        sys.exit("set BENCH_DATABASE_URL to a PostgreSQL database the benchmark may fill")
    key = SigningKey("EdDSA")
    with KeyServer() as key_server:
        key_server.publish(key)
        run(url, key, key_server.base_url)


def run(url: str, key: SigningKey, issuer: str) -> None:
    app = create_app(
        {
            "DATABASE_URL": url,
            "BETTER_AUTH_URL": issuer,
            "TRUSTED_HOSTS": HOST,
            "RATELIMIT_PER_USER": "100000000/minute",
            "RATELIMIT_PER_IP": "100000000/minute",
        }
    )
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (the request log, for the whole run)
    now = int(time.time())
    claims = {"sub": USER, "iat": now, "exp": now + 3600, "iss": issuer, "aud": issuer}
    token = key.sign(claims)
    headers = {"Authorization": f"Bearer {token}"}
    with app.app_context():
        flask_migrate.upgrade()
        db.session.execute(delete(Task).where(Task.user_id == USER))
        db.session.commit()
    client = app.test_client()
    ids = []
    for n in range(N_TASKS):
        created = client.post(
            f"/api/{USER}/tasks",
            json={"title": f"task {n}", "description": "words"},
            headers=headers,
        )
        ids.append(created.json["id"])
    for label, path in (("list", f"/api/{USER}/tasks"), ("get one", f"/api/{USER}/tasks/{ids[0]}")):
        profile(app, label, EnvironBuilder(path=path, headers=headers).get_environ())


def profile(app, label: str, environ: dict) -> None:
    def request() -> None:
        body = app.wsgi_app(dict(environ), lambda status, headers, exc_info=None: None)
        b"".join(body)
        if hasattr(body, "close"):
            body.close()

    for _ in range(50):
        request()
    started, started_cpu = time.perf_counter(), time.process_time()
    for _ in range(REQUESTS):
        request()
    per_request = (time.process_time() - started_cpu) / REQUESTS * 1e6
    wall = (time.perf_counter() - started) / REQUESTS * 1e6

    # CPU time, as the total: waiting for PostgreSQL is no layer's cost.
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for _ in range(REQUESTS):
        request()
    profiler.disable()
    layers: collections.Counter[str] = collections.Counter()
    unplaced: collections.Counter[str] = collections.Counter()
    for (filename, _line, name), (_cc, _nc, own, _cum, callers) in pstats.Stats(
        profiler
    ).stats.items():
        # A C function's time is charged to the layers of its callers, each its share.
        shares = (
            [(caller[0], timing[2]) for caller, timing in callers.items()]
            if filename == "~" and callers
            else [(filename, own)]
        )
        for place, seconds in shares:
            layers[layer_of(place)] += seconds
            if layer_of(place).startswith("other"):
                unplaced[f"{os.path.basename(place)}:{name}"] += seconds
    total = sum(layers.values())
    cpu = f"{per_request:,.0f} µs of CPU per request"
    print(f"\n{label} ({N_TASKS} tasks): {cpu} ({wall:,.0f} µs wall)")
    for name, seconds in layers.most_common():
        print(f"  {name:28s} {seconds / total * per_request:7,.0f} µs  {seconds / total:6.1%}")
    print(
        "  of which, the standard library's most: "
        + ", ".join(
            f"{name} {seconds / total * per_request:,.0f} µs"
            for name, seconds in unplaced.most_common(5)
        )
    )


if __name__ == "__main__":
    main()
