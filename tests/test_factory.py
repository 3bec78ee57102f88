"""The app factory and its configuration: what starts, and what refuses to."""

import os
import subprocess
import sys

import pytest

from taskapp import create_app
from taskapp.config import ConfigError, database_url
from tests.support import HS_SECRET, ROOT


def test_factory_builds_an_app_with_a_secret(tmp_path):
    app = create_app({"BETTER_AUTH_SECRET": HS_SECRET, "DATABASE_URL": "sqlite://"})
    assert app.config["JWT_DECODE_ALGORITHMS"] == ["HS256"]
    assert not app.config["TESTING"]


def test_no_key_source_is_refused():
    with pytest.raises(ConfigError, match="no key source"):
        create_app({"DATABASE_URL": "sqlite://"})


def test_short_secret_is_refused_in_production():
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        create_app({"BETTER_AUTH_SECRET": "short", "DATABASE_URL": "sqlite://"})


def test_short_secret_is_allowed_in_development():
    app = create_app(
        {"BETTER_AUTH_SECRET": "short", "APP_ENV": "development", "DATABASE_URL": "sqlite://"}
    )
    assert app.config["JWT_SECRET_KEY"] == "short"


def test_auth_disabled_is_refused_outside_development():
    with pytest.raises(ConfigError, match="AUTH_ENABLED=false"):
        create_app(
            {"AUTH_ENABLED": "false", "BETTER_AUTH_SECRET": HS_SECRET, "DATABASE_URL": "sqlite://"}
        )


def test_unknown_app_env_is_refused():
    with pytest.raises(ConfigError, match="APP_ENV"):
        create_app({"APP_ENV": "staging", "BETTER_AUTH_SECRET": HS_SECRET})


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_boolean_settings_must_be_booleans(value):
    with pytest.raises(ConfigError, match="AUTH_ENABLED must be true or false"):
        create_app({"AUTH_ENABLED": value, "BETTER_AUTH_SECRET": HS_SECRET})


@pytest.mark.parametrize("value", ["soon", "-1"])
def test_numeric_settings_are_checked(value):
    with pytest.raises(ConfigError, match="JWT_LEEWAY_SECONDS"):
        create_app({"JWT_LEEWAY_SECONDS": value, "BETTER_AUTH_SECRET": HS_SECRET})


def test_jwks_mode_defaults_to_asymmetric_algorithms_issuer_and_audience():
    app = create_app({"BETTER_AUTH_URL": "https://auth.example.com/", "DATABASE_URL": "sqlite://"})
    assert app.config["JWKS_URL"] == "https://auth.example.com/api/auth/jwks"
    assert "HS256" not in app.config["JWT_DECODE_ALGORITHMS"]
    assert set(app.config["JWT_DECODE_ALGORITHMS"]) == {"EdDSA", "ES256", "ES512", "RS256", "PS256"}
    assert app.config["JWT_DECODE_ISSUER"] == "https://auth.example.com"
    assert app.config["JWT_DECODE_AUDIENCE"] == "https://auth.example.com"


def test_explicit_jwks_url_wins_over_the_derived_one():
    app = create_app(
        {
            "BETTER_AUTH_URL": "https://auth.example.com",
            "BETTER_AUTH_JWKS_URL": "https://keys.example.com/jwks.json",
        }
    )
    assert app.config["JWKS_URL"] == "https://keys.example.com/jwks.json"


def test_issuer_and_audience_accept_comma_separated_lists():
    app = create_app(
        {
            "BETTER_AUTH_URL": "https://auth.example.com",
            "JWT_ISSUER": "https://a.example.com, https://b.example.com",
            "JWT_AUDIENCE": "web,mobile",
        }
    )
    assert app.config["JWT_DECODE_ISSUER"] == ["https://a.example.com", "https://b.example.com"]
    assert app.config["JWT_DECODE_AUDIENCE"] == ["web", "mobile"]


def test_hs256_beside_a_jwks_is_refused():
    with pytest.raises(ConfigError, match="may not include HS256"):
        create_app({"BETTER_AUTH_URL": "https://auth.example.com", "JWT_ALGORITHMS": "HS256"})


def test_asymmetric_algorithms_without_a_jwks_are_refused():
    with pytest.raises(ConfigError, match="need BETTER_AUTH_URL"):
        create_app({"BETTER_AUTH_SECRET": HS_SECRET, "JWT_ALGORITHMS": "EdDSA"})


def test_unsupported_algorithm_is_refused():
    with pytest.raises(ConfigError, match="unsupported algorithms: none"):
        create_app({"BETTER_AUTH_URL": "https://auth.example.com", "JWT_ALGORITHMS": "none"})


def test_jwks_url_must_be_http():
    with pytest.raises(ConfigError, match=r"http\(s\)"):
        create_app({"BETTER_AUTH_JWKS_URL": "file:///etc/passwd"})


@pytest.mark.parametrize(
    "setting",
    [
        {"BETTER_AUTH_URL": "http://auth.example.com"},
        {"BETTER_AUTH_URL": "https://auth.example.com", "BETTER_AUTH_JWKS_URL": "http://keys"},
        {"BETTER_AUTH_URL": "http://127.0.0.2.example.com"},
        {"BETTER_AUTH_URL": "http://localhost.example.com:3000"},
    ],
)
def test_plain_http_jwks_is_refused_in_production(setting):
    with pytest.raises(ConfigError, match=r"plain http: .*JWKS_ALLOW_HTTP=true") as refused:
        create_app({**setting, "DATABASE_URL": "sqlite://"})
    assert "\n" not in str(refused.value)


def test_plain_http_jwks_is_allowed_when_the_operator_says_so():
    app = create_app(
        {
            "BETTER_AUTH_URL": "http://auth.internal",
            "JWKS_ALLOW_HTTP": "true",
            "DATABASE_URL": "sqlite://",
        }
    )
    assert app.config["JWKS_URL"] == "http://auth.internal/api/auth/jwks"


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:3000", "http://localhost:3000", "http://[::1]:3000", "http://127.0.0.5"],
)
def test_plain_http_jwks_on_this_machine_is_allowed(url):
    # Loopback never leaves the machine: nobody on the network can alter the key set.
    app = create_app({"BETTER_AUTH_URL": url, "DATABASE_URL": "sqlite://"})
    assert app.config["JWKS_URL"] == f"{url}/api/auth/jwks"


def test_plain_http_jwks_is_allowed_in_development():
    app = create_app(
        {
            "BETTER_AUTH_URL": "http://localhost:3000",
            "APP_ENV": "development",
            "DATABASE_URL": "sqlite://",
        }
    )
    assert app.config["JWKS_URL"] == "http://localhost:3000/api/auth/jwks"


def test_https_jwks_needs_no_permission():
    app = create_app({"BETTER_AUTH_URL": "https://auth.example.com", "DATABASE_URL": "sqlite://"})
    assert app.config["JWKS_URL"] == "https://auth.example.com/api/auth/jwks"


def test_development_generates_a_secret_once_in_the_instance_folder(tmp_path):
    settings = {"APP_ENV": "development", "DATABASE_URL": "sqlite://"}
    first = create_app(settings, instance_path=str(tmp_path))
    second = create_app(settings, instance_path=str(tmp_path))
    secret = first.config["JWT_SECRET_KEY"]
    assert len(secret) >= 32
    assert (tmp_path / "dev-secret").read_text() == secret
    assert (tmp_path / "dev-secret").stat().st_mode & 0o077 == 0
    assert second.config["JWT_SECRET_KEY"] == secret


def test_default_database_is_sqlite_in_the_instance_folder(tmp_path):
    app = create_app({"BETTER_AUTH_SECRET": HS_SECRET}, instance_path=str(tmp_path))
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/taskapp.sqlite3"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db.example.com/app", "postgresql+psycopg2://u:p@db.example.com/app"),
        ("postgresql://u:p@db.example.com/app", "postgresql+psycopg2://u:p@db.example.com/app"),
        (
            "postgresql://u@ep-x.neon.tech/app?sslmode=require",
            "postgresql+psycopg2://u@ep-x.neon.tech/app?sslmode=require",
        ),
        ("postgresql+psycopg2://u@h/app", "postgresql+psycopg2://u@h/app"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_postgres_urls_are_pinned_to_psycopg2(given, expected):
    assert database_url(given, "/unused") == expected


@pytest.mark.parametrize(
    ("url", "connect_args"),
    [
        # A database that accepts and never answers is an outage, not a hang
        # (tests/test_database_outage.py): libpq's own default is to wait forever.
        ("postgresql://u@db.example.com/app", {"connect_timeout": 5}),
        ("postgresql://u@db.example.com/app?connect_timeout=20", None),  # the URL's wins
        ("sqlite:////tmp/x.db", None),
    ],
)
def test_connecting_to_postgresql_is_bounded_in_time(url, connect_args):
    app = create_app({"DATABASE_URL": url, "BETTER_AUTH_SECRET": HS_SECRET})
    assert app.config["SQLALCHEMY_ENGINE_OPTIONS"].get("connect_args") == connect_args


def test_invalid_database_url_is_refused():
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        create_app({"DATABASE_URL": "not a url", "BETTER_AUTH_SECRET": HS_SECRET})


def test_auth_disabled_in_development_trusts_the_path_user(tmp_path):
    app = create_app(
        {"APP_ENV": "development", "AUTH_ENABLED": "false"}, instance_path=str(tmp_path)
    )
    with app.app_context():
        from taskapp.extensions import db

        db.create_all()
    response = app.test_client().get("/api/anyone/tasks")
    assert response.status_code == 200
    assert response.json == []


def test_wsgi_reports_a_bad_configuration_in_one_line(tmp_path):
    environment = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", "import wsgi"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "taskapp: configuration error: no key source: set BETTER_AUTH_URL "
        "(or BETTER_AUTH_JWKS_URL) or BETTER_AUTH_SECRET"
    ]
