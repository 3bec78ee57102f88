"""PostgreSQL restarts under load, behind gunicorn: no 500, nothing acknowledged is lost.

The test restarts the local PostgreSQL cluster (pg_ctlcluster, as root), so it
runs where that is allowed: in CI always, on a laptop only when it can.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections import Counter

import pytest
from sqlalchemy import select

from taskapp.extensions import db
from taskapp.models import Task
from tests.support import HS_SECRET, run_gunicorn, unavailable

WRITERS = 6
REQUEST_TIMEOUT = 15  # a request that takes longer counts as hung
RECOVERY_DEADLINE = 60  # a bound so a broken recovery fails instead of hanging


def require_cluster_control() -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    missing = None
    if shutil.which("pg_ctlcluster") is None or not versions:
        missing = "pg_ctlcluster and a local PostgreSQL cluster are needed"
    elif os.geteuid() != 0:
        missing = "restarting PostgreSQL needs root"
    if missing is None:
        return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart"]
    unavailable("database outage test", missing)


@pytest.fixture
def gunicorn(database_url, tmp_path):
    """The app under gunicorn (2 workers, 4 threads each) on a free port; yields its URL."""
    with run_gunicorn(
        tmp_path,
        "--workers",
        "2",
        "--threads",
        "4",
        "--timeout",
        "30",
        "--log-level",
        "info",
        env={"DATABASE_URL": database_url, "BETTER_AUTH_SECRET": HS_SECRET},
    ) as server:
        yield server.url


def send(method: str, url: str, body: dict | None, headers: dict):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
    except (TimeoutError, urllib.error.URLError) as error:
        return f"no answer: {error}", None


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_writes_survive_a_postgresql_restart(app, gunicorn, auth):
    restart = require_cluster_control()
    headers = auth("alice", lifetime=3600)
    tasks_url = f"{gunicorn}/api/alice/tasks"
    statuses: Counter = Counter()
    created: dict[str, str] = {}  # acknowledged with 201: id -> title
    completed: set[str] = set()  # acknowledged with 200 to {"is_completed": true}
    lock = threading.Lock()
    under_load = threading.Event()  # the workers are up and writing
    acknowledged_after_restart = threading.Event()
    restarted = threading.Event()
    stop = threading.Event()

    def write(worker: int):
        while not stop.is_set():
            title = f"worker {worker} task {uuid.uuid4().hex[:8]}"
            status, body = send("POST", tasks_url, {"title": title}, headers)
            with lock:
                statuses[status] += 1
                if status == 201:
                    created[body["id"]] = title
            if status != 201:
                continue
            status, body = send(
                "PATCH", f"{tasks_url}/{body['id']}/complete", {"is_completed": True}, headers
            )
            with lock:
                statuses[status] += 1
                if status == 200:
                    completed.add(body["id"])
                    if len(completed) >= 2 * WRITERS:
                        under_load.set()
                    if restarted.is_set():
                        acknowledged_after_restart.set()

    writers = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for writer in writers:
        writer.start()
    try:
        assert under_load.wait(timeout=RECOVERY_DEADLINE), f"no load before the restart: {statuses}"
        subprocess.run(restart, check=True, timeout=120, capture_output=True)
        restarted.set()
        recovered = acknowledged_after_restart.wait(timeout=RECOVERY_DEADLINE)
    finally:
        stop.set()
        for writer in writers:
            writer.join()

    assert recovered, f"no write succeeded after the restart: {statuses}"
    assert set(statuses) <= {200, 201, 503}, statuses
    assert statuses[503] >= 1, f"the restart was not noticed, the test proved nothing: {statuses}"
    with app.app_context():
        stored = {str(task.id): task for task in db.session.scalars(select(Task))}
    for task_id, title in created.items():
        assert stored[task_id].title == title
    for task_id in completed:
        assert stored[task_id].is_completed is True
