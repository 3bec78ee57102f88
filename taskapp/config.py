"""Every setting taskapp reads, listed, parsed and checked in one place.

Settings come from the environment (and `.env`, which `wsgi.py` and the `flask`
command load), overridden by the mapping given to `create_app()`. A setting that
cannot work stops start-up with one `ConfigError` line instead of failing later,
on some request. `SETTINGS` is the one list of their names: the app reads no
other, the tests clear every one of them, and the README's table lists them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from limits import parse_many
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# Read by load_config() below.
APP_SETTINGS = (
    "APP_ENV",
    "FLASK_DEBUG",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "METRICS_ENABLED",
    "PROMETHEUS_MULTIPROC_DIR",
    "AUTH_ENABLED",
    "DATABASE_URL",
    "BETTER_AUTH_URL",
    "BETTER_AUTH_JWKS_URL",
    "JWKS_ALLOW_HTTP",
    "BETTER_AUTH_SECRET",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_ALGORITHMS",
    "JWT_LEEWAY_SECONDS",
    "JWT_IDENTITY_CLAIM",
    "JWT_MAX_LIFETIME_SECONDS",
    "JWKS_TIMEOUT_SECONDS",
    "JWKS_CACHE_SECONDS",
    "JWKS_MIN_REFETCH_SECONDS",
    "MAX_BODY_BYTES",
    "CORS_ORIGINS",
    "CORS_ALLOW_CREDENTIALS",
    "PROXY_HOPS",
    "TRUSTED_HOSTS",
    "RATELIMIT_ENABLED",
    "RATELIMIT_PER_USER",
    "RATELIMIT_PER_IP",
    "RATELIMIT_EXEMPT_ADDRESSES",
    "RATELIMIT_STORAGE_URI",
    "RATELIMIT_KEY_PREFIX",
    "TOMBSTONE_DAYS",
)
# Read by gunicorn.conf.py, which imports nothing from taskapp (see its preload_app),
# so it reads them itself; tests/test_settings.py checks it reads exactly these.
GUNICORN_SETTINGS = ("GUNICORN_BIND", "GUNICORN_WORKERS", "GUNICORN_THREADS")
SETTINGS = APP_SETTINGS + GUNICORN_SETTINGS

ASYMMETRIC_ALGORITHMS = ("EdDSA", "ES256", "ES512", "RS256", "PS256")
SYMMETRIC_ALGORITHMS = ("HS256",)
MIN_SECRET_BYTES = 32
DEV_SECRET_FILE = "dev-secret"  # noqa: S105 (a file name)
SQLITE_FILE = "taskapp.sqlite3"
RATE_LIMIT_STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix")
# libpq waits for a connection forever by default: a database host that accepts but
# never answers would hold every request, and in the end every thread. With this
# bound such a request is a 503 like any outage. `?connect_timeout=` in DATABASE_URL wins.
DATABASE_CONNECT_TIMEOUT_SECONDS = 5
ANY_ORIGIN = "*"
ANY_HOST = "*"
# Served when TRUSTED_HOSTS is unset outside development (Werkzeug matches no IPv6 literal).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")
# A host name or IPv4 address, or `.example.com` for every name under it (Werkzeug's rule).
HOST_NAME = re.compile(r"\.?[a-z0-9-]+(\.[a-z0-9-]+)*")


class ConfigError(RuntimeError):
    """A setting that cannot work; the message is one line for the operator."""


class Settings:
    """The raw settings by name, each read as the type it must be or a ConfigError.

    Only names in APP_SETTINGS can be read, so a setting cannot be added here
    without being added to the list the tests and the README are checked against.
    """

    def __init__(self, environ: Mapping[str, str], overrides: Mapping[str, object]):
        unknown = sorted(set(overrides) - set(APP_SETTINGS))
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(unknown)}")
        self._values = {name: environ[name] for name in APP_SETTINGS if name in environ}
        self._values.update((name, str(value)) for name, value in overrides.items())

    def raw(self, name: str) -> str:
        """The value as given ("" when unset)."""
        if name not in APP_SETTINGS:
            raise KeyError(f"{name} is not in taskapp.config.APP_SETTINGS")
        return self._values.get(name, "")

    def text(self, name: str, default: str = "") -> str:
        return self.raw(name).strip() or default

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        """One of `choices`, in any letter case."""
        value = self.text(name, default)
        for choice in choices:
            if value.lower() == choice.lower():
                return choice
        raise ConfigError(f"{name} must be {_either(choices)}, not {value!r}")

    def flag(self, name: str, default: bool) -> bool:
        value = self.text(name).lower()
        if not value:
            return default
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, not {self.raw(name)!r}")

    def number(self, name: str, default: float, minimum: float) -> float:
        if not self.text(name):
            return default
        try:
            value = float(self.raw(name))
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {self.raw(name)!r}") from None
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum:g}, not {self.raw(name)!r}")
        return value

    def whole_number(self, name: str, default: int, minimum: int) -> int:
        value = float(self.number(name, default, minimum))
        if not value.is_integer():
            raise ConfigError(f"{name} must be a whole number, not {self.raw(name)!r}")
        return int(value)

    def names(self, name: str) -> list[str]:
        """A comma-separated list."""
        return [item.strip() for item in self.raw(name).split(",") if item.strip()]

    def rate_limit(self, name: str, default: str) -> str:
        value = self.text(name, default)
        try:
            parse_many(value)
        except ValueError:
            raise ConfigError(
                f"{name} must be a rate limit such as {default!r}, not {value!r}"
            ) from None
        return value

    def networks(self, name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """A comma-separated list of IP addresses and networks (CIDR)."""
        networks = []
        for item in self.names(name):
            try:
                networks.append(ipaddress.ip_network(item))
            except ValueError:
                raise ConfigError(f"{name}: {_not_a_network(item)}") from None
        return tuple(networks)


def _not_a_network(item: str) -> str:
    try:
        meant = ipaddress.ip_network(item, strict=False)
    except ValueError:
        return f"{item!r} is not an IP address or network (such as 127.0.0.1 or 10.0.0.0/8)"
    return f"{item!r} has host bits set: the network is {meant}"


def _either(choices: tuple[str, ...]) -> str:
    return f"{', '.join(choices[:-1])} or {choices[-1]}"


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


def engine_options(url: str) -> dict[str, Any]:
    """SQLAlchemy's engine options for the database at `url` (as database_url made it)."""
    # Never keep a connection longer than five minutes (serverless PostgreSQL
    # closes idle ones); taskapp.extensions tests one that sat idle before use.
    options: dict[str, Any] = {"pool_recycle": 300}
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        options["connect_args"] = {"connect_timeout": DATABASE_CONNECT_TIMEOUT_SECONDS}
    return options


def cors_origins(settings: Settings) -> tuple[list[str], bool]:
    """CORS_ORIGINS as browsers write `Origin`, and whether they may send credentials.

    taskapp.web.cors matches origins exactly, as browsers serialise them: scheme and
    host in lower case, no path. So a configured origin is lower-cased and loses a
    trailing slash (`https://App.example.com/` works as meant), and anything that is
    not an origin is refused rather than never matching.
    """
    names = settings.names("CORS_ORIGINS")
    credentials = settings.flag("CORS_ALLOW_CREDENTIALS", True)
    if ANY_ORIGIN in names:
        if names != [ANY_ORIGIN]:
            raise ConfigError("CORS_ORIGINS is either * (any origin) or a list of origins")
        # Browsers refuse credentials with `Access-Control-Allow-Origin: *`, and echoing
        # every origin instead would let any site send them: the frontends must be named.
        if credentials:
            raise ConfigError(
                "CORS_ORIGINS=* cannot allow credentials: list the frontends' origins, "
                "or set CORS_ALLOW_CREDENTIALS=false"
            )
        return names, False
    return [_origin(name) for name in names], credentials


def _origin(value: str) -> str:
    origin = value.lower().removesuffix("/")
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 (raises ValueError when the port is not a number)
    except ValueError:
        parts = None
    if (
        parts is None
        or not origin.isascii()
        or not parts.hostname
        or "@" in parts.netloc
        or origin != f"{parts.scheme}://{parts.netloc}"
    ):
        raise ConfigError(
            "CORS_ORIGINS takes origins such as https://app.example.com "
            f"(scheme://host[:port], no path), not {value!r}"
        )
    return origin


def trusted_hosts(settings: Settings, development: bool) -> list[str] | None:
    """TRUSTED_HOSTS as Flask takes it: the host names requests may name, or None for any.

    The host a request names (`Host`, or `X-Forwarded-Host` behind PROXY_HOPS proxies)
    becomes the host of `Location` and `Link`, so outside development an unset list
    serves this machine's own names only: a forgotten setting refuses other hosts with
    400s rather than serving any host, and a server run for this machine alone (a
    benchmark, a smoke test) needs no setting.
    """
    names = [name.lower() for name in settings.names("TRUSTED_HOSTS")]
    if ANY_HOST in names:
        if names != [ANY_HOST]:
            raise ConfigError("TRUSTED_HOSTS is either * (any host) or a list of host names")
        return None
    if not names:
        return None if development else list(LOOPBACK_HOSTS)
    for name in names:
        if not HOST_NAME.fullmatch(name):
            raise ConfigError(
                "TRUSTED_HOSTS takes host names such as api.example.com "
                f"(no scheme, no port), not {name!r}"
            )
    return names


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _development_secret(instance_path: str) -> str:
    """A random HS256 secret made once per checkout, so `make run` needs no setup."""
    path = Path(instance_path) / DEV_SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def load_config(overrides: Mapping[str, object] | None, instance_path: str) -> dict[str, Any]:
    """Build the Flask config from the environment and `overrides`, or raise ConfigError."""
    settings = Settings(os.environ, overrides or {})

    environment = settings.choice("APP_ENV", "production", ("production", "development"))
    development = environment == "development"
    debug = settings.flag("FLASK_DEBUG", False)
    if debug and not development:
        raise ConfigError("debug mode (FLASK_DEBUG) is refused outside APP_ENV=development")
    auth_enabled = settings.flag("AUTH_ENABLED", True)
    if not auth_enabled and not development:
        raise ConfigError("AUTH_ENABLED=false is refused outside APP_ENV=development")

    better_auth_url = settings.text("BETTER_AUTH_URL").rstrip("/")
    jwks_url = settings.text("BETTER_AUTH_JWKS_URL")
    if not jwks_url and better_auth_url:
        jwks_url = f"{better_auth_url}/api/auth/jwks"
    if jwks_url and not jwks_url.startswith(("https://", "http://")):
        raise ConfigError("BETTER_AUTH_URL and BETTER_AUTH_JWKS_URL must be http(s) URLs")
    # Whoever can change the key set in transit can sign any token taskapp accepts:
    # plain http is for development, for a key server on this machine (loopback never
    # leaves it), or for an operator who says so (a private network).
    allow_http = settings.flag("JWKS_ALLOW_HTTP", False)
    if (
        jwks_url.startswith("http://")
        and not development
        and not allow_http
        and not _is_loopback(urlsplit(jwks_url).hostname)
    ):
        raise ConfigError(
            "the JWKS URL (BETTER_AUTH_URL or BETTER_AUTH_JWKS_URL) is plain http: use https, "
            "or set JWKS_ALLOW_HTTP=true for a key server on a trusted network"
        )
    secret = settings.raw("BETTER_AUTH_SECRET")
    if not jwks_url and not secret and development:
        secret = _development_secret(instance_path)
    if auth_enabled and not jwks_url and not secret:
        raise ConfigError(
            "no key source: set BETTER_AUTH_URL (or BETTER_AUTH_JWKS_URL) or BETTER_AUTH_SECRET"
        )
    if secret and len(secret.encode()) < MIN_SECRET_BYTES and not development:
        raise ConfigError(f"BETTER_AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes")

    algorithms = settings.names("JWT_ALGORITHMS")
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

    storage_uri = settings.text("RATELIMIT_STORAGE_URI", "memory://")
    if urlsplit(storage_uri).scheme not in RATE_LIMIT_STORAGE_SCHEMES:
        raise ConfigError("RATELIMIT_STORAGE_URI must be memory:// or a redis:// URL")
    origins, credentials = cors_origins(settings)
    issuers = settings.names("JWT_ISSUER") or ([better_auth_url] if better_auth_url else [])
    audiences = settings.names("JWT_AUDIENCE") or ([better_auth_url] if better_auth_url else [])
    database = database_url(settings.raw("DATABASE_URL"), instance_path)

    return {
        "APP_ENV": environment,
        "DEBUG": debug,
        "LOG_FORMAT": settings.choice("LOG_FORMAT", "json", ("json", "console")),
        "LOG_LEVEL": settings.choice(
            "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        ),
        "METRICS_ENABLED": settings.flag("METRICS_ENABLED", False),
        "PROMETHEUS_MULTIPROC_DIR": settings.text("PROMETHEUS_MULTIPROC_DIR") or None,
        "AUTH_ENABLED": auth_enabled,
        "SQLALCHEMY_DATABASE_URI": database,
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options(database),
        "MAX_CONTENT_LENGTH": int(settings.number("MAX_BODY_BYTES", 64 * 1024, 1)),
        # How many proxies in front of the app set X-Forwarded-*: exactly that many
        # values are trusted, so a client cannot forge its address, scheme or host.
        "PROXY_HOPS": settings.whole_number("PROXY_HOPS", 0, 0),
        # Flask's: a request naming another host gets 400 (taskapp.web.errors).
        "TRUSTED_HOSTS": trusted_hosts(settings, development),
        "JWKS_URL": jwks_url or None,
        "JWKS_TIMEOUT_SECONDS": settings.number("JWKS_TIMEOUT_SECONDS", 3, 0.1),
        "JWKS_CACHE_SECONDS": settings.number("JWKS_CACHE_SECONDS", 600, 0),
        "JWKS_MIN_REFETCH_SECONDS": settings.number("JWKS_MIN_REFETCH_SECONDS", 5, 0),
        # Read by taskapp.web.cors.
        "CORS_ORIGINS": origins,
        "CORS_ALLOW_CREDENTIALS": credentials,
        # Read by taskapp.web.ratelimit.
        "RATELIMIT_ENABLED": settings.flag("RATELIMIT_ENABLED", True),
        "RATELIMIT_PER_USER": settings.rate_limit("RATELIMIT_PER_USER", "120/minute"),
        "RATELIMIT_PER_IP": settings.rate_limit("RATELIMIT_PER_IP", "300/minute"),
        # Matched against the client address the app sees (after ProxyFix): behind
        # a proxy, the forwarded one. None by default, so a proxy that PROXY_HOPS
        # does not know of (every client then seems to be the proxy) cannot turn
        # the per-IP limit off unseen.
        "RATELIMIT_EXEMPT_ADDRESSES": settings.networks("RATELIMIT_EXEMPT_ADDRESSES"),
        "RATELIMIT_STORAGE_URI": storage_uri,
        "RATELIMIT_KEY_PREFIX": settings.text("RATELIMIT_KEY_PREFIX", "taskapp"),
        # Read by `flask purge`: how long the change feed tells of a deletion. A client
        # that has not synced for longer starts again from nothing (a 410).
        "TOMBSTONE_DAYS": settings.whole_number("TOMBSTONE_DAYS", 30, 1),
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
        "JWT_DECODE_LEEWAY": int(settings.number("JWT_LEEWAY_SECONDS", 30, 0)),
        # A token whose exp is decades away is a token that never expires.
        "JWT_MAX_LIFETIME_SECONDS": settings.number("JWT_MAX_LIFETIME_SECONDS", 30 * 86400, 60),
        "JWT_IDENTITY_CLAIM": settings.text("JWT_IDENTITY_CLAIM", "sub"),
    }
