"""gunicorn's settings for taskapp: `gunicorn --config gunicorn.conf.py`.

The master reads this file at start and again on SIGHUP (`systemctl reload taskapp`).
The environment overrides the defaults below (README, "Configuration"). This file
imports nothing from taskapp, on purpose: see `preload_app`.
"""

import os
import subprocess
import sys


def _whole_number(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        # One line for the operator, as taskapp's own settings do.
        raise SystemExit(f"gunicorn.conf.py: {name} must be a whole number, at least 1: {raw!r}")
    return value


def _cpus() -> int:
    """The CPUs this process may run on (taskset, cpusets), not all the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


wsgi_app = "wsgi:app"
proc_name = "taskapp"

# Loopback by default, so a bare `gunicorn -c gunicorn.conf.py` is never exposed;
# deploy/taskapp.service binds the unix socket deploy/nginx.conf proxies to.
bind = [os.environ.get("GUNICORN_BIND", "").strip() or "127.0.0.1:8000"]
# The unix socket is read-write for its owner and group only (the unit runs
# gunicorn with nginx's group).
umask = 0o007

# A Python process runs one thread at a time, so CPUs are used by workers:
# one per CPU, and at least two so one slow or restarting worker never leaves
# the API without one. Threads overlap the waits on PostgreSQL within a worker.
# Each thread may hold a database connection: workers x threads must stay under
# PostgreSQL's max_connections (100 by default), and threads at most 15, the
# size of a worker's connection pool (SQLAlchemy's 5 + 10 overflow): more
# threads would wait for a connection.
# gthread, by measurement: gunicorn's docs recommend sync workers behind a buffering
# proxy such as nginx, but on this project's 2-core machine, in alternating runs of a
# list of 50 and a single task under 8 connections, sync workers were not faster
# (each request then needs a new connection) and their p99 was higher.
# bench/README.md has the figures.
worker_class = "gthread"
workers = _whole_number("GUNICORN_WORKERS", max(2, _cpus()))
threads = _whole_number("GUNICORN_THREADS", 4)

# A worker whose heartbeat stops for `timeout` seconds is killed and replaced.
# On SIGTERM and SIGHUP workers stop accepting and get `graceful_timeout`
# seconds to finish the requests they hold; deploy/taskapp.service waits a
# little longer than that (TimeoutStopSec) before it kills anything.
timeout = 30
graceful_timeout = 30

# Not preloaded, although it would be safe: the app opens no database
# connection and fetches no keys at import (tests/test_deploy_files.py checks).
# The reason is SIGHUP: without preload every new worker imports the app
# afresh, so `systemctl reload` after a deploy serves the new code and .env.
# A preloaded app stays the one the master imported at start until a restart.
preload_app = False

# Each worker's heartbeat file lives in memory: on a disk-backed /tmp, updating
# it can block a worker long enough to be taken for a hung one.
SHARED_MEMORY = "/dev/shm"  # noqa: S108 (not a temporary file: gunicorn's heartbeats)
worker_tmp_dir = SHARED_MEMORY if os.path.isdir(SHARED_MEMORY) else None

# The app logs requests itself; gunicorn's own log (start, workers, signals,
# errors) goes to stderr, which systemd sends to the journal.
accesslog = None
errorlog = "-"
loglevel = "info"

# One rule decides which X-Forwarded-* headers are believed: the app's PROXY_HOPS
# (werkzeug's ProxyFix). gunicorn itself believes none, from any client: by default
# it would take X-Forwarded-Proto from 127.0.0.1 and from every client of a unix
# socket (forwarded_allow_ips does not apply there), and SCRIPT_NAME and PATH_INFO
# headers too, even with PROXY_HOPS=0. With no scheme headers to read, the scheme
# is the connection's own until ProxyFix, behind PROXY_HOPS proxies, sets it.
secure_scheme_headers: dict[str, str] = {}
forwarder_headers = ""
forwarded_allow_ips = ""

# gunicorn's control socket would live in $HOME/.gunicorn/gunicorn.ctl, shared by
# every gunicorn of that user on the host; signals do everything it would.
control_socket_disable = True


def child_exit(_server, worker):
    """With metrics in multiprocess mode, forget a worker that is gone (its live gauges)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


# A worker that exits while importing the app is replaced by another, which exits the
# same way: a setting that cannot work would restart workers without end. So the
# master checks the settings first, and stops with taskapp's one line.
SETTINGS_CHECK_TIMEOUT = 60  # seconds; the check imports taskapp and reads settings
# EX_CONFIG (sysexits.h): deploy/taskapp.service does not restart gunicorn after it,
# since starting again cannot help until someone changes the settings.
SETTINGS_REFUSED = 78


def on_starting(server):
    """Stop gunicorn, before it listens or starts a worker, if taskapp's settings cannot work."""
    refusal = _settings_refusal(server)
    if refusal:
        print(refusal, file=sys.stderr, flush=True)
        if server.pidfile is not None:
            server.pidfile.unlink()
        sys.exit(SETTINGS_REFUSED)


def on_reload(server):
    """On SIGHUP, before new workers start: stop rather than replace workers that serve
    with ones that cannot start. (deploy/taskapp.service checks before it sends SIGHUP.)"""
    refusal = _settings_refusal(server)
    if refusal:
        print(refusal, file=sys.stderr, flush=True)
        server.halt(exit_status=SETTINGS_REFUSED)


def _settings_refusal(server):
    """What stops taskapp from starting with the current environment and .env, or None.

    The check is `python -m wsgi` (wsgi.py: the same .env, the same settings, no app
    built), in a child process rather than an import here, because the master must
    stay free of both: imported taskapp modules would be inherited by every worker it
    forks, which would run that code even after a SIGHUP (see preload_app); and .env
    loaded into the master's environment would be inherited too, where it outranks
    the .env a new worker reads, so an edited .env would never take effect.
    """
    try:
        check = subprocess.run(
            [sys.executable, "-m", "wsgi"],
            cwd=server.cfg.chdir,
            capture_output=True,
            text=True,
            timeout=SETTINGS_CHECK_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"gunicorn.conf.py: checking taskapp's settings took over {SETTINGS_CHECK_TIMEOUT} s"
    if check.returncode == 0:
        return None
    # taskapp's one line; anything else (a traceback) is shown whole.
    return check.stderr.strip() or f"gunicorn.conf.py: python -m wsgi exited {check.returncode}"
