"""taskapp: a per-user task API for frontends that sign in with Better Auth."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from taskapp import cli
from taskapp.auth import tokens
from taskapp.config import load_config
from taskapp.extensions import api, db, migrate
from taskapp.tasks import change_feed, tags, views
from taskapp.web import cors, errors, health, logs, metrics, openapi, ratelimit, security_headers
from taskapp.web.keep_alive import finish_request_bodies

log = logging.getLogger(__name__)


def create_app(
    config: Mapping[str, object] | None = None, instance_path: str | None = None
) -> Flask:
    """Build the app from the environment; `config` overrides environment variables by name.

    `instance_path` (default: ./instance beside the package) holds the SQLite file
    and the development secret.
    """
    app = Flask(__name__, instance_path=instance_path)
    app.config.update(load_config(config, app.instance_path))
    app.url_map.strict_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]

    logs.init_logging(app)
    db.init_app(app)
    migrate.init_app(app, db, render_as_batch=True)
    tokens.init_auth(app)
    ratelimit.init_rate_limits(app)
    api.init_app(app)
    views.init_tasks(app)
    tags.init_tags(app)
    change_feed.init_change_feed(app)
    app.register_blueprint(health.blp)
    openapi.init_openapi(app)
    errors.register_error_handlers(app)
    cli.register_commands(app)
    metrics.init_metrics(app)
    security_headers.init_security_headers(app)
    cors.init_cors(app)
    finish_request_bodies(app)

    if app.config["PROXY_HOPS"]:
        # Behind nginx: the client's address, and the scheme, host and port it
        # used (for Location and Link), come from the proxies' X-Forwarded-* headers.
        # The outermost wrapper, so every other layer sees the corrected values.
        hops = app.config["PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)  # type: ignore[method-assign]

    if not app.config["AUTH_ENABLED"]:
        log.warning("AUTH_ENABLED=false: every request is trusted as the user in its path")
    return app
