"""gunicorn checks taskapp's settings in its master: one line and a stop, never a restart loop.

A worker that exits while importing the app is replaced by a new one, which exits the
same way. So gunicorn.conf.py's `on_starting` checks the settings (the environment and
the working directory's .env, as wsgi.py reads them) before any worker starts, and
`on_reload` before SIGHUP replaces workers. Real gunicorn masters, started here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support import (
    HS_SECRET,
    ROOT,
    START_TIMEOUT,
    Log,
    free_port,
    run_gunicorn,
    stop,
)

NO_KEY_SOURCE = (
    "taskapp: configuration error: no key source: set BETTER_AUTH_URL "
    "(or BETTER_AUTH_JWKS_URL) or BETTER_AUTH_SECRET"
)
SETTINGS_REFUSED = 78  # gunicorn.conf.py's exit status, which deploy/taskapp.service knows
# Far beyond a start that stops at once; a master that restarts workers never gets there.
EXIT_TIMEOUT = 2 * START_TIMEOUT


def gunicorn_that_should_stop(directory: Path, env: dict[str, str]) -> tuple[int, list[str]]:
    """Start gunicorn in `directory`; its exit status and output lines once it stops."""
    inherited = {name: value for name, value in os.environ.items() if name != "GUNICORN_CMD_ARGS"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py")],
        cwd=directory,
        env={
            **inherited,
            "PYTHONPATH": str(ROOT),
            "GUNICORN_BIND": f"127.0.0.1:{free_port()}",
            "GUNICORN_WORKERS": "2",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = Log(process.stdout)
    try:
        status = process.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        stop(process)
        log.close()
        pytest.fail(f"gunicorn still running after {EXIT_TIMEOUT} s:\n{''.join(log.lines)}")
    log.close()
    return status, [line.rstrip("\n") for line in log.lines]


def configuration_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "configuration error" in line]


def test_gunicorn_without_a_key_source_stops_with_one_line_and_no_worker(tmp_path):
    status, lines = gunicorn_that_should_stop(tmp_path, {})
    assert status == SETTINGS_REFUSED
    assert configuration_lines(lines) == [NO_KEY_SOURCE]
    assert not [line for line in lines if "Booting worker" in line], lines
    assert not [line for line in lines if "Traceback" in line], lines


def test_gunicorn_checks_the_dotenv_of_its_working_directory(tmp_path):
    (tmp_path / ".env").write_text(f"BETTER_AUTH_SECRET={HS_SECRET}\nJWKS_TIMEOUT_SECONDS=soon\n")
    status, lines = gunicorn_that_should_stop(tmp_path, {})
    assert status == SETTINGS_REFUSED
    assert configuration_lines(lines) == [
        "taskapp: configuration error: JWKS_TIMEOUT_SECONDS must be a number, not 'soon'"
    ]


def test_gunicorn_with_a_key_source_in_dotenv_starts_its_workers(tmp_path):
    (tmp_path / ".env").write_text(f"BETTER_AUTH_SECRET={HS_SECRET}\n")
    with run_gunicorn(tmp_path, env={"GUNICORN_WORKERS": "2"}) as server:
        server.worker_pids(2)
        assert not configuration_lines(server.log.lines)


def healthz_answers(url: str) -> None:
    """Wait until a worker has loaded the app and answers /healthz."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=START_TIMEOUT) as response:
                assert response.status == 200
                return
        except OSError:
            assert time.monotonic() < deadline, "no answer from /healthz"
            time.sleep(0.05)  # polling for the app to listen, not synchronisation


def test_sighup_with_settings_that_cannot_work_stops_gunicorn_with_one_line(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"BETTER_AUTH_SECRET={HS_SECRET}\n")
    # One worker, answering: it read the first .env, so only the master reads the new one.
    with run_gunicorn(tmp_path, env={"GUNICORN_WORKERS": "1"}) as server:
        healthz_answers(server.url)
        dotenv.write_text("BETTER_AUTH_SECRET=short\n")
        server.process.send_signal(signal.SIGHUP)
        try:
            status = server.process.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"gunicorn still running after SIGHUP:\n{''.join(server.log.lines)}")
        server.log.close()
        lines = [line.rstrip("\n") for line in server.log.lines]
        assert status == SETTINGS_REFUSED
        assert configuration_lines(lines) == [
            "taskapp: configuration error: BETTER_AUTH_SECRET must be at least 32 bytes"
        ]
        assert len([line for line in lines if "Booting worker" in line]) == 1, lines
