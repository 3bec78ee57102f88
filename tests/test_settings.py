"""One list of settings, `taskapp.config.SETTINGS`: the app reads no other, the tests
clear all of them, and the README's table lists exactly them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from taskapp.config import APP_SETTINGS, GUNICORN_SETTINGS, SETTINGS, ConfigError, Settings
from tests.support import ROOT

# Values a developer's shell might hold, each of which changes what the app does.
PLAUSIBLE = {
    "APP_ENV": "development",
    "FLASK_DEBUG": "1",
    "LOG_FORMAT": "console",
    "LOG_LEVEL": "CRITICAL",
    "METRICS_ENABLED": "true",
    "AUTH_ENABLED": "false",
    "DATABASE_URL": "sqlite:////nonexistent/taskapp.sqlite3",
    "BETTER_AUTH_URL": "http://127.0.0.1:9",
    "JWKS_ALLOW_HTTP": "true",
    "BETTER_AUTH_SECRET": "a-different-secret-that-is-long-enough-0123456789",
    "JWT_ISSUER": "https://issuer.example.com",
    "JWT_AUDIENCE": "https://audience.example.com",
    "JWT_ALGORITHMS": "RS256",
    "JWT_LEEWAY_SECONDS": "0",
    "JWT_IDENTITY_CLAIM": "email",
    "JWT_MAX_LIFETIME_SECONDS": "60",
    "MAX_BODY_BYTES": "1",
    "CORS_ORIGINS": "https://elsewhere.example.com",
    "CORS_ALLOW_CREDENTIALS": "false",
    "PROXY_HOPS": "3",
    "TRUSTED_HOSTS": "elsewhere.example.com",
    "RATELIMIT_ENABLED": "true",
    "RATELIMIT_PER_USER": "1/hour",
    "RATELIMIT_PER_IP": "1/hour",
    "RATELIMIT_EXEMPT_ADDRESSES": "10.0.0.0/8",
    "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:9",
    "TOMBSTONE_DAYS": "1",
    "GUNICORN_WORKERS": "7",
}
# Files whose tests build apps (factory, logs, metrics under gunicorn, the endpoints).
SAMPLE = ["tests/test_factory.py", "tests/test_observability.py", "tests/test_tasks.py"]


def test_the_plausible_values_cover_every_app_setting_that_takes_a_value():
    left_to_invalid = set(APP_SETTINGS) - set(PLAUSIBLE)
    assert left_to_invalid <= {
        "PROMETHEUS_MULTIPROC_DIR",
        "BETTER_AUTH_JWKS_URL",
        "JWKS_TIMEOUT_SECONDS",
        "JWKS_CACHE_SECONDS",
        "JWKS_MIN_REFETCH_SECONDS",
        "RATELIMIT_KEY_PREFIX",
    }


def test_a_setting_missing_from_the_list_cannot_be_read():
    settings = Settings({}, {})
    with pytest.raises(KeyError, match="NOT_A_SETTING"):
        settings.raw("NOT_A_SETTING")


def test_an_unknown_override_is_refused():
    with pytest.raises(ConfigError, match="unknown settings: DATABSE_URL"):
        Settings({}, {"DATABSE_URL": "sqlite://"})


def test_the_setting_read_at_import_is_cleared_before_taskapp_is_imported():
    # prometheus_client chooses its storage when it is imported, before any fixture
    # runs, so tests/__init__.py clears this one first.
    assert "PROMETHEUS_MULTIPROC_DIR" in SETTINGS
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_no_module_but_config_reads_the_environment():
    readers = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "taskapp").rglob("*.py")
        if re.search(r"\bos\.(environ|getenv)\b", path.read_text())
    ]
    assert readers == ["taskapp/config.py"]


def test_gunicorn_conf_reads_its_listed_settings_and_no_others():
    source = (ROOT / "gunicorn.conf.py").read_text()
    quoted_names = set(re.findall(r"\"([A-Z][A-Z0-9]*_[A-Z0-9_]+)\"", source))
    assert set(GUNICORN_SETTINGS) <= quoted_names <= set(SETTINGS)


def test_the_readme_table_lists_every_setting():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("\n## Configuration") :]
    table = table[: table.index("\n## ", 1)]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    listed = [
        name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])
    ]
    assert sorted(listed) == sorted(SETTINGS)


def _outcomes(tmp_path, name: str, settings: dict[str, str]) -> dict[str, str]:
    """Run SAMPLE on SQLite in a fresh pytest with `settings` in its environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "CI")}
    env.update(settings)
    report = tmp_path / f"{name}.xml"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / name}",
            f"--junitxml={report}",
            *SAMPLE,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.exists(), run.stdout + run.stderr
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314 (our own pytest's)
        results = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = (results or ["passed"])[0]
    return outcomes


def test_settings_in_the_shell_leave_the_suite_unchanged(tmp_path):
    clean = _outcomes(tmp_path, "clean", {})
    assert clean and set(clean.values()) <= {"passed", "skipped"}
    invalid = {name: "not a valid value!" for name in SETTINGS}
    assert _outcomes(tmp_path, "invalid", invalid) == clean
    assert _outcomes(tmp_path, "plausible", {**invalid, **PLAUSIBLE}) == clean
