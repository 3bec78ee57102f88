"""More than one host: nginx (deploy/nginx.conf with deploy/nginx-multihost.conf's upstream)
in front of several gunicorns, PostgreSQL through PgBouncer in transaction pooling
(deploy/pgbouncer.ini), rate limits counted in one Redis.

docs/deployment.md ("More than one host") describes the layout; these tests run it
on one machine, each host a gunicorn on a port of its own.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import pytest
from sqlalchemy import func, select

from taskapp.extensions import db
from taskapp.models import IdempotencyKey, Task
from tests.support import (
    HS_SECRET,
    ROOT,
    START_TIMEOUT,
    Gunicorn,
    free_port,
    run_gunicorn,
    stop,
)
from tests.test_deploy import Nginx, run_nginx
from tests.test_rate_limits import REDIS_URL
from tests.test_rate_limits import redis_prefix as redis_prefix  # the fixture

UPSTREAM_SERVER = re.compile(r"^(\s*server )\S+(.*)$", re.MULTILINE)


def multihost_upstream(addresses: list[str]) -> str:
    """deploy/nginx-multihost.conf's upstream block, its hosts at `addresses` (host:port)."""
    upstream = (ROOT / "deploy" / "nginx-multihost.conf").read_text()
    block = upstream[upstream.index("upstream taskapp {") :]
    template = UPSTREAM_SERVER.search(block)
    assert template, "deploy/nginx-multihost.conf has no server line"
    servers = "".join(f"{template[1]}{address}{template[2]}\n" for address in addresses)
    return UPSTREAM_SERVER.sub("", block).replace("{\n", "{\n" + servers, 1)


# --- which requests nginx sends on to the next host -------------------------------


class DroppingHost:
    """A host that reads each request whole, then closes the connection without an answer:
    a host that dies while it holds the request. Counts what reached it."""

    def __init__(self):
        self.received: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        with contextlib.suppress(OSError):  # closed at the end
            while True:
                connection, _ = self._listener.accept()
                with connection:
                    self.received.append(self._read_request(connection))

    @staticmethod
    def _read_request(connection: socket.socket) -> str:
        data = b""
        while b"\r\n\r\n" not in data and (chunk := connection.recv(65536)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length: *(\d+)", head)
        while length and len(body) < int(length[1]) and (chunk := connection.recv(65536)):
            body += chunk
        return head.split(b" ", 1)[0].decode()

    def close(self):
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in _serve
        self._listener.close()
        self._thread.join(timeout=START_TIMEOUT)


@pytest.mark.parametrize(
    ("method", "body", "tries"),
    [
        ("GET", None, 3),
        ("PUT", {"title": "Same again"}, 3),
        ("DELETE", None, 3),
        ("POST", {"title": "Only once"}, 1),
        ("PATCH", None, 1),
    ],
)
def test_nginx_sends_a_dropped_request_to_the_next_host_only_when_idempotent(
    tmp_path, method, body, tries
):
    hosts = [DroppingHost() for _ in range(3)]
    try:
        upstream = multihost_upstream([host.address for host in hosts])
        with run_nginx(tmp_path, tmp_path / "unused.sock", upstream) as proxy:
            status, _, answer = proxy.json(method, f"/api/alice/tasks/{uuid.uuid4()}", body)
    finally:
        for host in hosts:
            host.close()
    assert status == 502, answer
    assert set(answer) == {"detail"}
    # Every try reached a different host; a POST or PATCH only the first.
    assert sorted(len(host.received) for host in hosts) == sorted([1] * tries + [0] * (3 - tries))
    assert {method} == {request for host in hosts for request in host.received}


# --- three hosts under load: one crashes, one is restarted ------------------------

HOSTS = 3
CLIENTS = 4
REQUEST_TIMEOUT = 15
CREATE_DEADLINE = 60  # seconds a client keeps retrying one create
REQUEST_LOG = r'"event": "request"'


@dataclass
class Load:
    """Client threads that list, fetch and create (with an Idempotency-Key, retried on
    any failure with the same key) through nginx until stopped."""

    nginx: Nginx
    task_path: str
    headers: dict
    failed_gets: list = field(default_factory=list)
    creates: dict = field(default_factory=dict)  # key -> statuses of each try, in order
    gets: int = 0

    def __post_init__(self):
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(CLIENTS)]

    def _send(self, method, path, payload=None, headers=None):
        try:
            status, _, content = self.nginx.request(
                method,
                path,
                None if payload is None else json.dumps(payload),
                {**self.headers, "Content-Type": "application/json", **(headers or {})},
            )
        except OSError as error:
            return f"no answer: {error!r}", b""
        return status, content

    def _run(self, client: int):
        for n in itertools.count():
            if self._stop.is_set():
                return
            for path in ("/api/alice/tasks?limit=5", self.task_path):
                status, content = self._send("GET", path)
                with self._lock:
                    self.gets += 1
                    if status != 200:
                        self.failed_gets.append((path, status, content[:200]))
                    self._lock.notify_all()
            self._create(f"client-{client}-{n}")

    def _create(self, key: str):
        tries = self.creates.setdefault(key, [])
        deadline = time.monotonic() + CREATE_DEADLINE
        while time.monotonic() < deadline:
            status, _ = self._send(
                "POST", "/api/alice/tasks", {"title": key}, {"Idempotency-Key": key}
            )
            tries.append(status)
            if status == 201:
                return
            # 502 (the host died or stopped with it), 409 (its first try still holds
            # the key): the same request again, as a client should.

    def wait_for_gets(self, count: int):
        """Until `count` more GETs than now have been answered."""
        deadline = time.monotonic() + START_TIMEOUT
        with self._lock:
            target = self.gets + count
            while self.gets < target:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"the load stalled at {self.gets} GETs"
                self._lock.wait(remaining)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CREATE_DEADLINE + REQUEST_TIMEOUT)


def crash(host: Gunicorn) -> None:
    """SIGKILL to the host's master and its workers at once: a machine that dies."""
    workers = host.worker_pids(1)
    host.process.send_signal(signal.SIGKILL)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    host.process.wait(timeout=START_TIMEOUT)


@pytest.mark.parametrize("database_url", ["pgbouncer"], indirect=True)
def test_three_hosts_lose_no_request_when_one_crashes_and_one_restarts(
    app, database_url, redis_prefix, tmp_path, auth
):
    redis_client, prefix = redis_prefix
    headers = auth("alice", lifetime=3600)
    env = {
        "DATABASE_URL": database_url,
        "BETTER_AUTH_SECRET": HS_SECRET,
        "PROXY_HOPS": "1",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "4",
        "RATELIMIT_ENABLED": "true",
        "RATELIMIT_STORAGE_URI": REDIS_URL,
        "RATELIMIT_KEY_PREFIX": prefix,
        # Every request comes from one client address and one user: counted, never refused.
        "RATELIMIT_PER_USER": "100000/minute",
        "RATELIMIT_PER_IP": "100000/minute",
    }
    ports = [free_port() for _ in range(HOSTS)]
    directories = [tmp_path / f"host-{n}" for n in range(HOSTS)]
    with contextlib.ExitStack() as stack:
        hosts = []
        for directory, port in zip(directories, ports, strict=True):
            directory.mkdir()
            hosts.append(stack.enter_context(run_gunicorn(directory, env=env, port=port)))
        for host in hosts:
            host.worker_pids(1)
        upstream = multihost_upstream([f"127.0.0.1:{port}" for port in ports])
        nginx = stack.enter_context(run_nginx(tmp_path, tmp_path / "unused.sock", upstream))
        status, _, seed = nginx.json("POST", "/api/alice/tasks", {"title": "seed"}, headers)
        assert status == 201, seed

        with Load(nginx, f"/api/alice/tasks/{seed['id']}", headers) as load:
            load.wait_for_gets(40)
            crash(hosts[0])
            load.wait_for_gets(40)

            # A rolling restart of the second host: SIGTERM lets its requests finish,
            # then a new gunicorn takes the same port.
            assert stop(hosts[1].process) == 0
            restarted = stack.enter_context(run_gunicorn(directories[1], env=env, port=ports[1]))
            restarted.worker_pids(1)
            # nginx comes back to it once its fail_timeout (10 s) has passed.
            restarted.log.wait_for(REQUEST_LOG, timeout=START_TIMEOUT)
            load.wait_for_gets(40)

    assert not load.failed_gets, f"GETs failed: {load.failed_gets[:5]}"
    unfinished = {key: tries for key, tries in load.creates.items() if tries[-1:] != [201]}
    assert not unfinished, f"creates that never succeeded: {unfinished}"
    with app.app_context():
        per_title = dict(
            db.session.execute(select(Task.title, func.count()).group_by(Task.title)).all()
        )
        keys = db.session.scalar(select(func.count()).select_from(IdempotencyKey))
    assert {title: n for title, n in per_title.items() if n > 1} == {}, "a create landed twice"
    assert set(per_title) == {"seed", *load.creates}
    assert keys == len(load.creates)
    assert redis_client.keys(f"{prefix}:*"), "the hosts counted their limits elsewhere"
