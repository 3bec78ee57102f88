"""gunicorn.conf.py and deploy/: their settings, and that they agree with the app and each other."""

import os
import re
import runpy
from pathlib import Path

import pytest

from taskapp import create_app
from taskapp.config import GUNICORN_SETTINGS
from taskapp.extensions import db
from tests.support import HS_SECRET, ROOT, KeyServer, SigningKey


def gunicorn_conf(monkeypatch, **env) -> dict:
    """The settings gunicorn.conf.py gives gunicorn in this environment."""
    for name in GUNICORN_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def deploy_file(name: str) -> str:
    return (ROOT / "deploy" / name).read_text()


def setting(text: str, pattern: str) -> str:
    found = re.findall(pattern, text, re.MULTILINE)
    assert len(found) == 1, f"{pattern!r} should match once, matched {found}"
    return found[0]


def test_gunicorn_defaults(monkeypatch):
    conf = gunicorn_conf(monkeypatch)
    assert conf["wsgi_app"] == "wsgi:app"
    assert conf["bind"] == ["127.0.0.1:8000"]
    assert conf["worker_class"] == "gthread"
    assert conf["workers"] == max(2, len(os.sched_getaffinity(0)))
    assert conf["threads"] == 4
    assert conf["accesslog"] is None
    assert conf["preload_app"] is False


def test_gunicorn_settings_come_from_the_environment(monkeypatch):
    conf = gunicorn_conf(
        monkeypatch,
        GUNICORN_BIND="unix:/run/taskapp/gunicorn.sock",
        GUNICORN_WORKERS="3",
        GUNICORN_THREADS="8",
    )
    assert conf["bind"] == ["unix:/run/taskapp/gunicorn.sock"]
    assert (conf["workers"], conf["threads"]) == (3, 8)


@pytest.mark.parametrize("hops", ["0", "1", "2"])
def test_gunicorn_believes_no_forwarded_header_whatever_the_environment(monkeypatch, hops):
    # The app's PROXY_HOPS alone decides (tests/test_proxy.py runs it under gunicorn);
    # gunicorn's own variable for it is overridden, not read.
    conf = gunicorn_conf(monkeypatch, PROXY_HOPS=hops, FORWARDED_ALLOW_IPS="*")
    assert conf["secure_scheme_headers"] == {}
    assert conf["forwarder_headers"] == ""
    assert conf["forwarded_allow_ips"] == ""


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "many"])
def test_gunicorn_refuses_a_worker_count_that_cannot_work(monkeypatch, value):
    message = f"GUNICORN_WORKERS must be a whole number, at least 1: {value!r}"
    with pytest.raises(SystemExit, match=re.escape(message)):
        gunicorn_conf(monkeypatch, GUNICORN_WORKERS=value)


SHARED_MEMORY = "/dev/shm"  # noqa: S108 (gunicorn's heartbeat files, by design)


@pytest.mark.skipif(not os.path.isdir(SHARED_MEMORY), reason="no /dev/shm on this system")
def test_worker_heartbeats_are_kept_in_memory(monkeypatch):
    assert gunicorn_conf(monkeypatch)["worker_tmp_dir"] == SHARED_MEMORY


def test_building_the_app_connects_to_nothing():
    # What makes preload_app safe, should it be turned on: a database that
    # cannot be reached and a key server are both left alone until a request.
    with KeyServer() as key_server:
        key_server.publish(SigningKey("EdDSA"))
        app = create_app(
            {
                "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/unreachable",
                "BETTER_AUTH_URL": key_server.base_url,
            }
        )
        with app.app_context():
            assert db.engine.pool.checkedin() == db.engine.pool.checkedout() == 0
            db.engine.dispose()
    assert key_server.fetches == 0


def test_nginx_refuses_bodies_over_the_apps_default_limit():
    limit = setting(deploy_file("nginx.conf"), r"^\s*client_max_body_size (\d+)k;")
    app = create_app({"DATABASE_URL": "sqlite://", "BETTER_AUTH_SECRET": HS_SECRET})
    assert int(limit) * 1024 == app.config["MAX_CONTENT_LENGTH"]


def test_nginx_and_the_unit_name_the_same_socket():
    upstream = setting(deploy_file("nginx.conf"), r"^\s*server unix:(\S+);")
    unit = deploy_file("taskapp.service")
    assert setting(unit, r"GUNICORN_BIND=unix:(\S+)") == upstream
    # The socket's directory is the one systemd makes for the service.
    assert Path(upstream).parent == Path("/run") / setting(unit, r"^RuntimeDirectory=(\S+)$")


def test_the_unit_trusts_exactly_the_one_proxy():
    assert setting(deploy_file("taskapp.service"), r"\bPROXY_HOPS=(\d+)") == "1"


def test_systemd_waits_for_gunicorns_graceful_shutdown(monkeypatch):
    unit = deploy_file("taskapp.service")
    graceful = gunicorn_conf(monkeypatch)["graceful_timeout"]
    assert int(setting(unit, r"^TimeoutStopSec=(\d+)$")) > graceful
    assert setting(unit, r"^KillSignal=(\S+)$") == "SIGTERM"
    # SIGTERM to the master alone: the workers finish their requests.
    assert setting(unit, r"^KillMode=(\S+)$") == "mixed"
    assert setting(unit, r"^ExecReload=(.*kill -HUP .*)$") == "/bin/kill -HUP $MAINPID"


def test_nginx_resends_only_what_is_idempotent():
    # nginx's own rule, left in force: a POST or PATCH that reached a host is never
    # sent to another (docs/deployment.md, "More than one host").
    retried = setting(deploy_file("nginx.conf"), r"^\s*proxy_next_upstream (.*);$")
    assert retried.split() == ["error", "timeout"]


def test_pgbouncer_lends_server_connections_per_transaction():
    assert setting(deploy_file("pgbouncer.ini"), r"^pool_mode = (\S+)$") == "transaction"


def test_systemd_does_not_restart_gunicorn_stopped_by_its_settings(monkeypatch):
    # gunicorn.conf.py stops the master with this status when taskapp's settings
    # cannot work (tests/test_gunicorn_settings.py): starting again cannot help.
    refused = gunicorn_conf(monkeypatch)["SETTINGS_REFUSED"]
    unit = deploy_file("taskapp.service")
    assert setting(unit, r"^RestartPreventExitStatus=(\d+)$") == str(refused)
    assert setting(unit, r"^Restart=(\S+)$") == "on-failure"
