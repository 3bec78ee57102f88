"""Every setting taskapp reads, parsed and checked in one place.

Settings come from the environment (and `.env`, which `wsgi.py` and the `flask`
command load), overridden by the mapping given to `create_app()`. A setting that
cannot work stops start-up with one `ConfigError` line instead of failing later,
on some request.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from limits import parse_many
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ASYMMETRIC_ALGORITHMS = ("EdDSA", "ES256", "ES512", "RS256", "PS256")
SYMMETRIC_ALGORITHMS = ("HS256",)
MIN_SECRET_BYTES = 32
DEV_SECRET_FILE = "dev-secret"  # noqa: S105 (a file name)
SQLITE_FILE = "taskapp.sqlite3"
RATE_LIMIT_STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix")
# A slow or unreachable Redis may delay a request by this much before the
# limiter falls back to counting in memory.
RATE_LIMIT_STORAGE_TIMEOUT_SECONDS = 1


class ConfigError(RuntimeError):
    """A setting that cannot work; the message is one line for the operator."""


def _flag(source: Mapping[str, str], name: str, default: bool) -> bool:
    raw = source.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _number(source: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = source.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, not {raw!r}")
    return value


def _list(source: Mapping[str, str], name: str) -> list[str]:
    return [item.strip() for item in source.get(name, "").split(",") if item.strip()]


def _rate_limit(source: Mapping[str, str], name: str, default: str) -> str:
    raw = source.get(name, "").strip() or default
    try:
        parse_many(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a rate limit such as {default!r}, not {raw!r}") from None
    return raw


def rate_limit_storage(source: Mapping[str, str]) -> tuple[str, dict]:
    """Flask-Limiter's storage URI and options: memory:// (one process) or Redis (shared)."""
    uri = source.get("RATELIMIT_STORAGE_URI", "").strip() or "memory://"
    scheme = urlsplit(uri).scheme
    if scheme not in RATE_LIMIT_STORAGE_SCHEMES:
        raise ConfigError("RATELIMIT_STORAGE_URI must be memory:// or a redis:// URL")
    # Storage errors arrive as limits.errors.StorageError, whatever the client.
    options: dict = {"wrap_exceptions": True}
    if scheme != "memory":
        options.update(
            key_prefix=source.get("RATELIMIT_KEY_PREFIX", "").strip() or "taskapp",
            socket_connect_timeout=RATE_LIMIT_STORAGE_TIMEOUT_SECONDS,
            socket_timeout=RATE_LIMIT_STORAGE_TIMEOUT_SECONDS,
        )
    return uri, options


def database_url(raw: str | None, instance_path: str) -> str:
    """The SQLAlchemy URL to use, with PostgreSQL URLs pinned to psycopg2.

    Neon and Heroku hand out `postgres://`, which SQLAlchemy does not know, and
    SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3; both become
    `postgresql+psycopg2://` so the URL a user pastes works with our driver.
    """
    if not raw:
        return f"sqlite:///{Path(instance_path) / SQLITE_FILE}"
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError("DATABASE_URL is not a valid database URL") from None
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg2")
    return url.render_as_string(hide_password=False)


def _development_secret(instance_path: str) -> str:
    """A random HS256 secret made once per checkout, so `make run` needs no setup."""
    path = Path(instance_path) / DEV_SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def load_config(overrides: Mapping[str, object] | None, instance_path: str) -> dict:
    """Build the Flask config from the environment and `overrides`, or raise ConfigError."""
    source = {**os.environ, **{k: str(v) for k, v in (overrides or {}).items()}}

    environment = source.get("APP_ENV", "production").strip().lower()
    if environment not in ("production", "development"):
        raise ConfigError(f"APP_ENV must be production or development, not {environment!r}")
    development = environment == "development"

    debug = _flag(source, "FLASK_DEBUG", False)
    if debug and not development:
        raise ConfigError("debug mode (FLASK_DEBUG) is refused outside APP_ENV=development")
    log_format = source.get("LOG_FORMAT", "json").strip().lower()
    if log_format not in ("json", "console"):
        raise ConfigError(f"LOG_FORMAT must be json or console, not {log_format!r}")
    log_level = source.get("LOG_LEVEL", "INFO").strip().upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(
            f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {log_level!r}"
        )
    auth_enabled = _flag(source, "AUTH_ENABLED", True)
    if not auth_enabled and not development:
        raise ConfigError("AUTH_ENABLED=false is refused outside APP_ENV=development")

    better_auth_url = source.get("BETTER_AUTH_URL", "").strip().rstrip("/")
    jwks_url = source.get("BETTER_AUTH_JWKS_URL", "").strip()
    if not jwks_url and better_auth_url:
        jwks_url = f"{better_auth_url}/api/auth/jwks"
    if jwks_url and not jwks_url.startswith(("https://", "http://")):
        raise ConfigError("BETTER_AUTH_URL and BETTER_AUTH_JWKS_URL must be http(s) URLs")
    secret = source.get("BETTER_AUTH_SECRET", "")
    if not jwks_url and not secret and development:
        secret = _development_secret(instance_path)
    if auth_enabled and not jwks_url and not secret:
        raise ConfigError(
            "no key source: set BETTER_AUTH_URL (or BETTER_AUTH_JWKS_URL) or BETTER_AUTH_SECRET"
        )
    if secret and len(secret.encode()) < MIN_SECRET_BYTES and not development:
        raise ConfigError(f"BETTER_AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes")

    algorithms = _list(source, "JWT_ALGORITHMS")
    if not algorithms:
        algorithms = list(ASYMMETRIC_ALGORITHMS if jwks_url else SYMMETRIC_ALGORITHMS)
    unknown = set(algorithms) - set(ASYMMETRIC_ALGORITHMS) - set(SYMMETRIC_ALGORITHMS)
    if unknown:
        names = ", ".join(sorted(unknown))
        raise ConfigError(f"JWT_ALGORITHMS has unsupported algorithms: {names}")
    # A key source serves one family: accepting HS256 beside a JWKS would let a
    # public key be used as an HMAC secret (algorithm confusion).
    if jwks_url and set(algorithms) & set(SYMMETRIC_ALGORITHMS):
        raise ConfigError("JWT_ALGORITHMS may not include HS256 when a JWKS is configured")
    if not jwks_url and set(algorithms) - set(SYMMETRIC_ALGORITHMS):
        raise ConfigError("asymmetric JWT_ALGORITHMS need BETTER_AUTH_URL or BETTER_AUTH_JWKS_URL")

    # How many proxies in front of the app set X-Forwarded-*: exactly that many
    # values are trusted, so a client cannot forge its address, scheme or host.
    proxy_hops = float(_number(source, "PROXY_HOPS", 0, 0))
    if not proxy_hops.is_integer():
        raise ConfigError(f"PROXY_HOPS must be a whole number, not {source['PROXY_HOPS']!r}")

    cors_origins = _list(source, "CORS_ORIGINS")
    rate_limit_storage_uri, rate_limit_storage_options = rate_limit_storage(source)
    issuers = _list(source, "JWT_ISSUER") or ([better_auth_url] if better_auth_url else [])
    audiences = _list(source, "JWT_AUDIENCE") or ([better_auth_url] if better_auth_url else [])

    return {
        "APP_ENV": environment,
        "DEBUG": debug,
        "LOG_FORMAT": log_format,
        "LOG_LEVEL": log_level,
        "METRICS_ENABLED": _flag(source, "METRICS_ENABLED", False),
        "AUTH_ENABLED": auth_enabled,
        "SQLALCHEMY_DATABASE_URI": database_url(source.get("DATABASE_URL"), instance_path),
        "SQLALCHEMY_ENGINE_OPTIONS": {
            # Serverless PostgreSQL (Neon) closes idle connections: test each one
            # before use and never keep one longer than five minutes.
            "pool_pre_ping": True,
            "pool_recycle": 300,
        },
        "MAX_CONTENT_LENGTH": int(_number(source, "MAX_BODY_BYTES", 64 * 1024, 1)),
        "PROXY_HOPS": int(proxy_hops),
        "JWKS_URL": jwks_url or None,
        "JWKS_TIMEOUT_SECONDS": _number(source, "JWKS_TIMEOUT_SECONDS", 3, 0.1),
        "JWKS_CACHE_SECONDS": _number(source, "JWKS_CACHE_SECONDS", 600, 0),
        "JWKS_MIN_REFETCH_SECONDS": _number(source, "JWKS_MIN_REFETCH_SECONDS", 5, 0),
        "CORS_ORIGINS": cors_origins,
        "CORS_OPTIONS": {
            "origins": cors_origins,
            "allow_headers": [
                "Authorization",
                "Content-Type",
                "If-Match",
                "If-None-Match",
                "Idempotency-Key",
                "X-Request-ID",
            ],
            "expose_headers": [
                "ETag",
                "Link",
                "Location",
                "Retry-After",
                "X-Total-Count",
                "X-Request-ID",
                "Idempotent-Replayed",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
            ],
            "methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
            "max_age": 600,
            # Tokens travel in the Authorization header, never in cookies.
            "supports_credentials": False,
        },
        # Flask-Limiter reads RATELIMIT_ENABLED and RATELIMIT_STORAGE_*; the two limits are
        # taskapp's own (taskapp.extensions.limiter, taskapp.web.ratelimit).
        "RATELIMIT_ENABLED": _flag(source, "RATELIMIT_ENABLED", True),
        "RATELIMIT_PER_USER": _rate_limit(source, "RATELIMIT_PER_USER", "120/minute"),
        "RATELIMIT_PER_IP": _rate_limit(source, "RATELIMIT_PER_IP", "300/minute"),
        "RATELIMIT_STORAGE_URI": rate_limit_storage_uri,
        "RATELIMIT_STORAGE_OPTIONS": rate_limit_storage_options,
        # flask-jwt-extended: read only the Authorization header, verify with the
        # configured algorithms, issuer, audience and leeway.
        "JWT_SECRET_KEY": secret or None,
        "JWT_ALGORITHM": "HS256",
        "JWT_DECODE_ALGORITHMS": algorithms,
        "JWT_TOKEN_LOCATION": ["headers"],
        "JWT_DECODE_ISSUER": issuers[0] if len(issuers) == 1 else (issuers or None),
        "JWT_DECODE_AUDIENCE": audiences[0] if len(audiences) == 1 else (audiences or None),
        "JWT_ENCODE_ISSUER": issuers[0] if issuers else None,
        "JWT_ENCODE_AUDIENCE": audiences[0] if audiences else None,
        "JWT_DECODE_LEEWAY": int(_number(source, "JWT_LEEWAY_SECONDS", 30, 0)),
        # A token whose exp is decades away is a token that never expires.
        "JWT_MAX_LIFETIME_SECONDS": _number(source, "JWT_MAX_LIFETIME_SECONDS", 30 * 86400, 60),
        "JWT_IDENTITY_CLAIM": source.get("JWT_IDENTITY_CLAIM", "sub").strip() or "sub",
        "API_TITLE": "taskapp",
        "API_VERSION": "1.0.0",
        "OPENAPI_VERSION": "3.1.0",
        "OPENAPI_URL_PREFIX": "/",
        "OPENAPI_JSON_PATH": "openapi.json",
    }
