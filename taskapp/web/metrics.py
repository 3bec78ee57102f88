"""`GET /metrics` in Prometheus' format, when METRICS_ENABLED=true.

prometheus-flask-exporter counts requests and times them by route template and
status. Under gunicorn with PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py does
it), every worker writes its figures to that folder and /metrics adds them up, so
a scrape that lands on any worker sees the whole server. taskapp adds two
counters of its own: JWT verification failures by reason, and database errors.
"""

from __future__ import annotations

from flask import Flask, current_app
from prometheus_client import CollectorRegistry, Counter
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

# Created once per process and registered in each app's registry (or, under
# gunicorn, collected from the multiprocess folder).
JWT_FAILURES = Counter(
    "taskapp_jwt_verification_failures_total",
    "Bearer tokens refused, by reason.",
    ["reason"],
    registry=None,
)
DATABASE_ERRORS = Counter(
    "taskapp_database_errors_total",
    "Requests that met a database error, by kind.",
    ["kind"],
    registry=None,
)


def init_metrics(app: Flask) -> None:
    if not app.config["METRICS_ENABLED"]:
        return
    options = {
        "group_by": "url_rule",  # the route template, never the user's id in the path
        "excluded_paths": ["/metrics", "/healthz", "/readyz", "/docs"],
        "defaults_prefix": "taskapp",
    }
    if app.config["PROMETHEUS_MULTIPROC_DIR"]:
        GunicornInternalPrometheusMetrics(app, **options)
    else:
        registry = CollectorRegistry(auto_describe=True)
        registry.register(JWT_FAILURES)
        registry.register(DATABASE_ERRORS)
        PrometheusMetrics(app, registry=registry, **options)
    app.extensions["taskapp.metrics"] = True


def count_jwt_failure(reason: str) -> None:
    if current_app.extensions.get("taskapp.metrics"):
        JWT_FAILURES.labels(reason=reason).inc()


def count_database_error(kind: str) -> None:
    if current_app.extensions.get("taskapp.metrics"):
        DATABASE_ERRORS.labels(kind=kind).inc()
