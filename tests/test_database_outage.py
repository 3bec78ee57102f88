"""PostgreSQL restarts under load, behind gunicorn: no 500, nothing acknowledged is lost.

While it is down every failed request is a 503 in the JSON error shape with
Retry-After, /readyz says 503, and the log has one short line per answer, no
traceback; once it is back the same workers (no restart) write and are ready again.

The test runs its own PostgreSQL: `initdb` into a fresh temporary folder, a free
port on 127.0.0.1, the schema built by the migrations. It stops and starts that
cluster while writers run, and stops it (by its postmaster's pid if `pg_ctl`
cannot) when the test ends. The machine's PostgreSQL is never touched: the test
needs no TEST_DATABASE_URL and runs once per suite, not once per database.

initdb and pg_ctl refuse to run as root, so as root (as in CI) they run as the
`postgres` system user, which owns the temporary folder. Without PostgreSQL's
server programs the test is skipped on a laptop and fails in CI.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import flask_migrate
import pytest
from sqlalchemy import select as select_rows

from taskapp import create_app
from taskapp.extensions import db
from taskapp.models import Task
from tests.support import HS_SECRET, free_port, run_gunicorn, unavailable
from tests.tcp_proxy import tcp_proxy

WRITERS = 6
REQUEST_TIMEOUT = 15  # a request that takes longer counts as hung
RECOVERY_DEADLINE = 60  # a bound so a broken recovery fails instead of hanging
PG_CTL_TIMEOUT = 60  # seconds pg_ctl waits (-t) for the cluster to start or stop
SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")


def _version_key(bindir: str) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin -> (15,): the newest version is tried first."""
    return tuple(int(part) for part in re.findall(r"\d+", Path(bindir).parent.name))


def postgresql_bindir() -> Path | None:
    """The folder with initdb, pg_ctl and postgres, or None when this machine has none.

    pg_config may come from the client library alone (Debian's libpq-dev), so
    every candidate must hold all three programs.
    """
    candidates: list[str] = []
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            found = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(found.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    if pg_ctl := shutil.which("pg_ctl"):
        candidates.append(str(Path(pg_ctl).resolve().parent))
    for candidate in candidates:
        if candidate and all(os.access(Path(candidate, p), os.X_OK) for p in SERVER_PROGRAMS):
            return Path(candidate)
    return None


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, which only waits to be reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait (bounded) until `pid`, which is not our child, has ended; True if it has."""
    deadline = time.monotonic() + timeout
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        try:
            # A pidfd becomes readable when the process ends: no polling on the clock.
            select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)
        return not _alive(pid)
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # no pidfd (not Linux): poll the condition until the deadline
    return not _alive(pid)


@dataclass
class PrivatePostgreSQL:
    """A PostgreSQL cluster this test made, in `directory`, serving `url`."""

    bindir: Path
    directory: Path  # owned by `owner`; holds data/, the socket and the server's log
    port: int
    owner: pwd.struct_passwd | None  # the user pg_ctl runs as, when we are root

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "postgresql.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        """Run one of the server's programs as the cluster's owner; never raises on failure.

        Output goes to a file, not a pipe: a postmaster pg_ctl starts must not hold
        our pipe open, or reading it would hang.
        """
        as_owner = {}
        if self.owner is not None:
            as_owner = {"user": self.owner.pw_uid, "group": self.owner.pw_gid, "extra_groups": []}
        with tempfile.TemporaryFile(mode="w+") as output:
            try:
                result = subprocess.run(
                    [str(self.bindir / program), *args],
                    cwd=self.directory,  # a folder the owner may enter
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    timeout=PG_CTL_TIMEOUT + 30,
                    check=False,
                    **as_owner,
                )
            except subprocess.TimeoutExpired as expired:
                result = subprocess.CompletedProcess(expired.cmd, returncode=-1)
            output.seek(0)
            result.stdout = output.read()
        return result

    def pg_ctl(self, action: str, *args: str) -> None:
        """`pg_ctl start`, `stop` or `restart` on this cluster, waiting (-w) until done."""
        result = self.run(
            "pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(PG_CTL_TIMEOUT), *args,
        )  # fmt: skip
        if result.returncode != 0:
            pytest.fail(f"pg_ctl {action} failed:\n{result.stdout}\n{self.server_log()}")

    def server_log(self) -> str:
        try:
            return f"{self.log}:\n{self.log.read_text(errors='replace')}"
        except OSError:
            return f"{self.log}: no log"

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid from data/postmaster.pid, if it runs from this data folder."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        with contextlib.suppress(OSError):  # a recycled pid is someone else's process
            if str(self.data).encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return None
        return pid if _alive(pid) else None

    def shut_down(self) -> None:
        """Stop the cluster: pg_ctl, or else signals to its postmaster by pid."""
        pid = self.postmaster_pid()  # read first: a clean stop removes the file
        stopped = self.run(
            "pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", str(PG_CTL_TIMEOUT)
        )
        if pid is None or (stopped.returncode == 0 and _wait_gone(pid, PG_CTL_TIMEOUT)):
            return
        # SIGQUIT is PostgreSQL's immediate shutdown: it takes its backends with it.
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if _wait_gone(pid, PG_CTL_TIMEOUT):
                return


@contextlib.contextmanager
def private_postgresql(keep_log_in: Path) -> Iterator[PrivatePostgreSQL]:
    """A fresh PostgreSQL cluster on a free port, stopped and removed when the block ends."""
    bindir = postgresql_bindir()
    if bindir is None:
        unavailable(
            "database outage test",
            "PostgreSQL's server programs (initdb, pg_ctl, postgres): none in "
            "`pg_config --bindir`, /usr/lib/postgresql/*/bin or on PATH",
        )
    owner = None
    if os.geteuid() == 0:  # initdb and postgres refuse root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("database outage test", "a `postgres` user to run PostgreSQL as root")
    # A fresh folder, not tmp_path: the owner must reach it (pytest's folders are
    # 0700 root's), and a unix socket path must stay short.
    directory = Path(tempfile.mkdtemp(prefix="taskapp-pg-"))
    cluster = PrivatePostgreSQL(bindir, directory, free_port(), owner)
    try:
        if owner is not None:
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        initdb = cluster.run(
            "initdb", "-D", str(cluster.data), "-U", "postgres", "-A", "trust",
            "--auth-local=trust", "--no-locale", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        if initdb.returncode != 0:
            pytest.fail(f"initdb failed:\n{initdb.stdout}")
        # In the cluster's own settings, so a restart keeps them.
        with (cluster.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# taskapp tests/test_database_outage.py: private, throwaway\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {cluster.port}\n"
                f"unix_socket_directories = '{directory}'\n"
                "fsync = off\n"
                "full_page_writes = off\n"
            )
        cluster.pg_ctl("start")
        yield cluster
    finally:
        try:
            cluster.shut_down()
        finally:
            with contextlib.suppress(OSError):  # pytest keeps tmp_path for a post-mortem
                shutil.copy(cluster.log, keep_log_in / "postgresql.log")
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgresql(tmp_path):
    """A private PostgreSQL cluster with the schema built by the migrations."""
    with private_postgresql(keep_log_in=tmp_path) as cluster:
        app = create_app({"DATABASE_URL": cluster.url, "BETTER_AUTH_SECRET": HS_SECRET})
        with app.app_context():
            flask_migrate.upgrade()
            db.engine.dispose()
        yield cluster


@pytest.fixture
def gunicorn(postgresql, tmp_path):
    """The app under gunicorn (2 workers, 4 threads each) on a free port."""
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
        env={"DATABASE_URL": postgresql.url, "BETTER_AUTH_SECRET": HS_SECRET},
    ) as server:
        yield server


@dataclass
class Answer:
    status: int | str  # a string when no answer came: what happened instead
    body: object = None
    headers: dict[str, str] = field(default_factory=dict)


def send(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> Answer:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            return Answer(response.status, json.loads(response.read() or b"null"), response.headers)
    except urllib.error.HTTPError as error:
        return Answer(error.code, json.loads(error.read() or b"null"), error.headers)
    except (TimeoutError, urllib.error.URLError, ConnectionError) as error:
        return Answer(f"no answer: {error!r}")


def assert_outage_answer(answer: Answer) -> None:
    """503 in the API's one error shape, with a Retry-After that clients can act on."""
    assert answer.status == 503, answer
    assert isinstance(answer.body, dict), answer
    assert set(answer.body) == {"detail"}, answer
    assert answer.body["detail"], answer
    assert int(answer.headers["Retry-After"]) > 0, answer


def wait_for_status(url: str, status: int) -> Answer:
    """Ask `url` until it answers `status`, for at most RECOVERY_DEADLINE seconds."""
    deadline = time.monotonic() + RECOVERY_DEADLINE
    while (answer := send("GET", url)).status != status:
        assert time.monotonic() < deadline, f"{url} never answered {status}: {answer}"
        time.sleep(0.1)  # polling a condition, with a deadline
    return answer


def test_writes_survive_a_postgresql_restart(postgresql, gunicorn, auth):
    headers = auth("alice", lifetime=3600)
    tasks_url = f"{gunicorn.url}/api/alice/tasks"
    readyz_url = f"{gunicorn.url}/readyz"
    statuses: Counter = Counter()
    outage_answers: list[Answer] = []  # every 503, to check their shape
    created: dict[str, str] = {}  # acknowledged with 201: id -> title
    completed: set[str] = set()  # acknowledged with 200 to {"is_completed": true}
    lock = threading.Lock()
    under_load = threading.Event()  # the workers are up and writing
    stopping = threading.Event()  # PostgreSQL is being stopped
    noticed = threading.Event()  # a 503 answered while it was down
    acknowledged_after_restart = threading.Event()
    restarted = threading.Event()
    stop = threading.Event()

    def record(answer: Answer) -> None:
        statuses[answer.status] += 1
        if answer.status == 503:
            outage_answers.append(answer)
            if stopping.is_set():
                noticed.set()

    def write(worker: int):
        while not stop.is_set():
            title = f"worker {worker} task {uuid.uuid4().hex[:8]}"
            answer = send("POST", tasks_url, {"title": title}, headers)
            with lock:
                record(answer)
                if answer.status == 201:
                    created[answer.body["id"]] = title
            if answer.status != 201:
                continue
            task_id = answer.body["id"]
            answer = send(
                "PATCH", f"{tasks_url}/{task_id}/complete", {"is_completed": True}, headers
            )
            with lock:
                record(answer)
                if answer.status == 200:
                    completed.add(task_id)
                    if len(completed) >= 2 * WRITERS:
                        under_load.set()
                    if restarted.is_set():
                        acknowledged_after_restart.set()

    booted = gunicorn.worker_pids(2)
    assert send("GET", readyz_url).status == 200
    writers = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for writer in writers:
        writer.start()
    try:
        assert under_load.wait(timeout=RECOVERY_DEADLINE), f"no load before the restart: {statuses}"
        # A restart in two steps, so the outage lasts until the API has answered
        # 503 at least once: a restart quicker than any request proves nothing.
        # `-m fast` ends the connections the app holds (in the middle of requests,
        # under this load); until the start, new ones are refused.
        stopping.set()
        postgresql.pg_ctl("stop", "-m", "fast")
        down = noticed.wait(timeout=RECOVERY_DEADLINE)
        readyz_while_down = send("GET", readyz_url)
        postgresql.pg_ctl("start")
        restarted.set()
        recovered = acknowledged_after_restart.wait(timeout=RECOVERY_DEADLINE)
        # The same workers (gunicorn booted none anew) find the database again.
        ready_again = wait_for_status(readyz_url, 200)
    finally:
        stop.set()
        for writer in writers:
            writer.join()

    assert down, f"no 503 while PostgreSQL was down: {statuses}"
    assert_outage_answer(readyz_while_down)
    assert recovered, f"no write succeeded after the restart: {statuses}"
    assert ready_again.body == {"status": "ready"}
    assert set(statuses) <= {200, 201, 503}, statuses
    assert statuses[503] >= 1, f"the restart was not noticed, the test proved nothing: {statuses}"
    for answer in outage_answers:
        assert_outage_answer(answer)
    assert gunicorn.worker_pids(2) == booted, "gunicorn restarted a worker"
    # Known outages log a line each, never a traceback (see below).
    tracebacks = gunicorn.log.matches("Traceback")
    assert not tracebacks, f"{len(tracebacks)} tracebacks, the first: {tracebacks[0].string[:2000]}"
    app = create_app({"DATABASE_URL": postgresql.url, "BETTER_AUTH_SECRET": HS_SECRET})
    with app.app_context():
        stored = {str(task.id): task for task in db.session.scalars(select_rows(Task))}
        db.session.remove()
        db.engine.dispose()
    for task_id, title in created.items():
        assert stored[task_id].title == title
    for task_id in completed:
        assert stored[task_id].is_completed is True


# --- the network to the database failing -------------------------------------------


@pytest.fixture
def proxied_url(postgresql):
    """`(proxy, url)`: the private PostgreSQL behind a TCP proxy the test can fail."""
    with tcp_proxy(("127.0.0.1", postgresql.port)) as proxy:
        yield proxy, postgresql.url.replace(f":{postgresql.port}/", f":{proxy.port}/")


@pytest.mark.parametrize("failure", ["cut", "hang"])
def test_a_failing_network_to_the_database_is_503_until_it_heals(
    proxied_url, failure, tmp_path, auth
):
    """`cut`: every connection reset mid-stream, new ones refused. `hang`: connections
    reset, new ones accepted and never answered. Either way each request is answered
    503, in time, and the same worker serves again once the network is back."""
    proxy, url = proxied_url
    headers = auth("alice", lifetime=3600)
    with run_gunicorn(
        tmp_path,
        "--workers",
        "1",
        "--threads",
        "4",
        env={"DATABASE_URL": url, "BETTER_AUTH_SECRET": HS_SECRET},
    ) as server:
        tasks_url = f"{server.url}/api/alice/tasks"
        booted = server.worker_pids(1)
        for _ in range(3):  # connections in the pool, for the failure to cut
            assert send("POST", tasks_url, {"title": "before"}, headers).status == 201

        getattr(proxy, failure)()
        for method, url_asked, body in [
            ("POST", tasks_url, {"title": "during"}),
            ("GET", tasks_url, None),
            ("GET", f"{server.url}/readyz", None),
        ]:
            assert_outage_answer(send(method, url_asked, body, headers))

        proxy.restore()
        wait_for_status(f"{server.url}/readyz", 200)
        assert send("POST", tasks_url, {"title": "after"}, headers).status == 201
        assert server.worker_pids(1) == booted, "gunicorn restarted its worker"
        assert not server.log.matches("Traceback")


# --- what the log shows while the database is down ------------------------------------

# An answer during a known outage logs a line naming what failed, beside the request
# line: never a traceback, which says nothing more (and, in the console format, runs
# to a thousand lines that take seconds to render on every request).
MOST_LINES_PER_OUTAGE_ANSWER = 3
LONGEST_OUTAGE_LINE = 500  # characters; a JSON line holding a traceback runs to thousands


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_an_outage_logs_a_short_line_per_request_not_a_traceback(
    postgresql, log_format, auth, capsys
):
    app = create_app(
        {"DATABASE_URL": postgresql.url, "BETTER_AUTH_SECRET": HS_SECRET, "LOG_FORMAT": log_format}
    )
    client = app.test_client()
    headers = auth("alice")
    assert client.post("/api/alice/tasks", json={"title": "before"}, headers=headers).status_code
    postgresql.pg_ctl("stop", "-m", "fast")
    # A read and a write: the first meets the pooled connection the shutdown cut, the
    # second a server that refuses connections.
    for method in ("get", "post", "get"):
        capsys.readouterr()
        response = getattr(client, method)(
            "/api/alice/tasks", json={"title": "during"} if method == "post" else None,
            headers=headers,
        )  # fmt: skip
        logged = capsys.readouterr().err
        lines = logged.splitlines()
        assert response.status_code == 503, logged
        assert 1 <= len(lines) <= MOST_LINES_PER_OUTAGE_ANSWER, logged
        assert max(len(line) for line in lines) <= LONGEST_OUTAGE_LINE, logged
        assert "Traceback" not in logged
        (outage,) = [line for line in lines if "unavailable" in line]
        assert "database" in outage
        assert "OperationalError" in outage
    with app.app_context():
        db.engine.dispose()
