"""`GET /metrics` in Prometheus' format, when METRICS_ENABLED=true.

Requests are counted and timed by method, route template and status, and taskapp
adds two counters: JWT verification failures by reason, and database errors. Every
label takes its value from a fixed set, so no client can add series: a method or
status outside the known ones counts as "other", a path no route matches as
"unmatched" (prometheus-flask-exporter's own request metrics label the raw method
and status, and offer no option to bound them, so taskapp records its own and uses
the exporter only to render them). Under gunicorn with PROMETHEUS_MULTIPROC_DIR set
(gunicorn.conf.py does it), every worker writes its figures to that folder and
/metrics adds them up, so a scrape that lands on any worker sees the whole server.
"""

from __future__ import annotations

from http import HTTPStatus
from timeit import default_timer

from flask import Flask, Response, abort, current_app, g, request, request_started
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

PATH = "/metrics"
PREFIX = "taskapp"
OTHER = "other"
UNMATCHED = "unmatched"
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
STATUSES = frozenset(str(status.value) for status in HTTPStatus)
# Probes, the scrape itself and the docs page would drown the API's own figures.
UNCOUNTED_ROUTES = frozenset((PATH, "/healthz", "/readyz", "/docs/", "/docs/<path:path>"))

JWT_FAILURE_REASONS = ("missing", "invalid", "expired", "claims", "unverifiable")
DATABASE_ERROR_KINDS = ("unavailable", "other")

# Created once per process and registered in each app's registry (or, under
# gunicorn, collected from the multiprocess folder).
JWT_FAILURES = Counter(
    f"{PREFIX}_jwt_verification_failures_total",
    "Bearer tokens refused, by reason.",
    ["reason"],
    registry=None,
)
DATABASE_ERRORS = Counter(
    f"{PREFIX}_database_errors_total",
    "Requests that met a database error, by kind.",
    ["kind"],
    registry=None,
)


class RequestMetrics:
    """One app's request figures, each label bounded (see the module's docstring)."""

    def __init__(self, registry: CollectorRegistry):
        self.duration = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "HTTP request duration in seconds, by method, route template and status.",
            ["method", "url_rule", "status"],
            registry=registry,
        )
        self.total = Counter(
            f"{PREFIX}_http_request_total",
            "HTTP requests, by method and status.",
            ["method", "status"],
            registry=registry,
        )

    def start(self, _app: Flask, **_extra: object) -> None:
        g.metrics_started = default_timer()

    def record(self, response: Response) -> Response:
        started = g.get("metrics_started")
        rule = request.url_rule.rule if request.url_rule else UNMATCHED
        if started is None or rule in UNCOUNTED_ROUTES:
            return response
        method = request.method if request.method in METHODS else OTHER
        status = str(response.status_code)
        status = status if status in STATUSES else OTHER
        self.duration.labels(method, rule, status).observe(max(default_timer() - started, 0))
        self.total.labels(method, status).inc()
        return response


def init_metrics(app: Flask) -> None:
    if not app.config["METRICS_ENABLED"]:
        return
    # The exporter renders the figures (content negotiation, the multiprocess folder);
    # its own request metrics and route are off: see the module's docstring.
    exporter: PrometheusMetrics
    if app.config["PROMETHEUS_MULTIPROC_DIR"]:
        # Checks the folder at start, and reads every worker's figures from it.
        exporter = GunicornInternalPrometheusMetrics(app=None, export_defaults=False)
    else:
        registry = CollectorRegistry(auto_describe=True)
        registry.register(JWT_FAILURES)
        registry.register(DATABASE_ERRORS)
        exporter = PrometheusMetrics(app=None, path=None, export_defaults=False, registry=registry)
    requests = RequestMetrics(exporter.registry)
    # Flask's signal comes before every before_request hook, so a request one of them
    # answers (a 429) is timed too; the app holds `requests`, the signal a weak reference.
    request_started.connect(requests.start, app)
    app.after_request(requests.record)

    def scrape() -> tuple[str, int, dict[str, str]]:
        # Exactly one path, so the proxy's rule for /metrics covers every way in: the
        # rule refuses /metrics/ (and /metrics%2F, which arrives as /metrics/), and
        # this check //metrics, which Werkzeug's routing takes for /metrics.
        if request.environ.get("PATH_INFO") != PATH:
            abort(404)
        names = request.args.getlist("name[]") or None
        text, content_type = exporter.generate_metrics(request.headers.get("Accept"), names)
        return text, 200, {"Content-Type": content_type}

    app.add_url_rule(PATH, "metrics", scrape, strict_slashes=True)
    app.extensions["taskapp.metrics"] = requests


def count_jwt_failure(reason: str) -> None:
    if current_app.extensions.get("taskapp.metrics"):
        JWT_FAILURES.labels(reason=reason if reason in JWT_FAILURE_REASONS else OTHER).inc()


def count_database_error(kind: str) -> None:
    if current_app.extensions.get("taskapp.metrics"):
        DATABASE_ERRORS.labels(kind=kind if kind in DATABASE_ERROR_KINDS else OTHER).inc()
