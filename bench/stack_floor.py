"""What the chosen stack costs before taskapp adds anything: CPU µs of one list of 50.

    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1/taskapp_bench python -m bench.stack_floor

The same page (one user's 50 newest tasks as a JSON array built by PostgreSQL, one
autocommit query on one connection) is served in-process by three apps that add one
layer each, and each is handed the same WSGI request many times:

- `bare WSGI`: a WSGI function, PyJWT's HS256 check, psycopg2 (the peers' floor);
- `Flask`: the same work inside a Flask view (routing, contexts, request and response
  objects);
- `Flask + flask-jwt-extended`: the token checked by `@jwt_required()` instead;
- `taskapp`: the API itself with the same HS256 secret, as deployed otherwise (rate
  limits on, with limits that never trip; request logs, to /dev/null).

The difference between two lines is what that layer costs per request; the first
three are what no change inside taskapp can remove. `bench.request_profile` breaks
taskapp's own line down by layer (with EdDSA through a JWKS).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import flask_migrate
import jwt
import psycopg2
from flask import Flask, Response, abort, request
from flask_jwt_extended import JWTManager, get_jwt_identity, jwt_required
from sqlalchemy import delete
from werkzeug.test import EnvironBuilder

from taskapp import create_app
from taskapp.extensions import db
from taskapp.models import Task
from tests.support import HS_SECRET, hs256_token

USER = "bench-stack-user"
N_TASKS = 50
HOST = "localhost"  # EnvironBuilder's, which TRUSTED_HOSTS must name
REQUESTS = int(os.environ.get("REQUESTS", "2000"))
PAGE = """
    SELECT coalesce(json_agg(page), '[]')::text FROM (
        SELECT id, title, description, is_completed, priority, created_at, updated_at
        FROM tasks WHERE user_id = %s ORDER BY created_at DESC, id DESC LIMIT 50
    ) AS page
"""
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def main() -> None:
    url = os.environ.get("BENCH_DATABASE_URL")
    if not url:
        sys.exit("set BENCH_DATABASE_URL to a PostgreSQL database the benchmark may fill")
    # taskapp's request log, and Alembic's, for the whole run.
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    fill(url)
    connection = psycopg2.connect(url)
    connection.autocommit = True
    token = hs256_token(USER, lifetime=3600)
    environ = EnvironBuilder(
        path=f"/api/{USER}/tasks", headers={"Authorization": f"Bearer {token}"}
    ).get_environ()

    def page_of(user_id: str) -> bytes:
        with connection.cursor() as cursor:
            cursor.execute(PAGE, (user_id,))
            return str(cursor.fetchone()[0]).encode()

    apps = {
        "bare WSGI": bare_wsgi(page_of),
        "Flask": flask_app(page_of),
        "Flask + flask-jwt-extended": flask_jwt_app(page_of),
        "taskapp": taskapp(url),
    }
    print(f"list of {N_TASKS}, CPU µs per request (median of 5 rounds of {REQUESTS}):")
    for name, app in apps.items():
        print(f"  {name:30s} {cpu_per_request(app, environ):7,.0f} µs")


def fill(url: str) -> None:
    """USER gets N_TASKS tasks, through taskapp's migrations and model."""
    app = create_app({"DATABASE_URL": url, "BETTER_AUTH_SECRET": HS_SECRET, "TRUSTED_HOSTS": HOST})
    with app.app_context():
        flask_migrate.upgrade()
        db.session.execute(delete(Task).where(Task.user_id == USER))
        for n in range(N_TASKS):
            db.session.add(Task(id=uuid.uuid4(), user_id=USER, title=f"task {n}"))
        db.session.commit()
        db.engine.dispose()


def bare_wsgi(page_of: Callable[[str], bytes]) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        user_id = environ["PATH_INFO"].split("/")[2]
        claims = jwt.decode(environ["HTTP_AUTHORIZATION"][7:], HS_SECRET, algorithms=["HS256"])
        if claims["sub"] != user_id:
            start_response("403 Forbidden", [])
            return [b""]
        body = page_of(user_id)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    return app


def flask_app(page_of: Callable[[str], bytes]) -> WSGIApp:
    app = Flask("stack_floor")

    @app.get("/api/<user_id>/tasks")
    def tasks(user_id: str) -> Response:
        token = request.headers["Authorization"][7:]
        if jwt.decode(token, HS_SECRET, algorithms=["HS256"])["sub"] != user_id:
            abort(403)
        return Response(page_of(user_id), mimetype="application/json")

    return app.wsgi_app


def flask_jwt_app(page_of: Callable[[str], bytes]) -> WSGIApp:
    app = Flask("stack_floor_jwt")
    app.config.update(JWT_SECRET_KEY=HS_SECRET, JWT_ALGORITHM="HS256")
    JWTManager(app)

    @app.get("/api/<user_id>/tasks")
    @jwt_required()
    def tasks(user_id: str) -> Response:
        if get_jwt_identity() != user_id:
            abort(403)
        return Response(page_of(user_id), mimetype="application/json")

    return app.wsgi_app


def taskapp(url: str) -> WSGIApp:
    app = create_app(
        {
            "DATABASE_URL": url,
            "BETTER_AUTH_SECRET": HS_SECRET,
            "TRUSTED_HOSTS": HOST,
            "RATELIMIT_PER_USER": "100000000/minute",
            "RATELIMIT_PER_IP": "100000000/minute",
        }
    )
    return app.wsgi_app


def cpu_per_request(app: WSGIApp, environ: dict[str, Any]) -> float:
    def request() -> None:
        body = app(dict(environ), lambda status, headers, exc_info=None: None)
        b"".join(body)
        if hasattr(body, "close"):
            body.close()

    for _ in range(200):
        request()
    rounds = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(REQUESTS):
            request()
        rounds.append((time.process_time() - started) / REQUESTS * 1e6)
    return sorted(rounds)[2]


if __name__ == "__main__":
    main()
