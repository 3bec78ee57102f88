"""Logs you can trace: one structured line per request, and a request id in every line.

Every log line, taskapp's own and every library's that goes through `logging`,
is rendered by structlog: JSON by default (LOG_FORMAT=json), readable colored
lines with LOG_FORMAT=console. While a request is served its id is bound to the
context, so each line written meanwhile, stack traces included, carries it. The
request line holds the method, the route template, the status, the duration,
the user when one was authenticated and the client address: never a token,
never a body.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from typing import TextIO, cast

import structlog
from flask import Flask, Response, g, request

REQUEST_ID_HEADER = "X-Request-ID"
# What a proxy may hand us as a request id: short, and safe in a header and a log.
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

REQUEST_LOGGER = "taskapp.requests"
# The request line's logger (configure_logging sets it): structlog's own, with no
# `logging` record, handler lock or caller lookup on the way, which made writing
# the line cost about three times as much. Every other line goes through `logging`.
log: structlog.typing.FilteringBoundLogger = structlog.get_logger(REQUEST_LOGGER)


class _CurrentStderr:
    """sys.stderr as it is when a line is written (tests and servers may replace it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(log_format: str, level: str) -> None:
    """Route structlog and the standard library's logging through one renderer."""
    global log
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    context: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
    ]
    shared: list[structlog.typing.Processor] = [*context, structlog.stdlib.add_logger_name, stamp]
    renderer = (
        structlog.dev.ConsoleRenderer()
        if log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([] if log_format == "console" else [structlog.processors.format_exc_info]),
            renderer,
        ],
    )
    handler = logging.StreamHandler(_CurrentStderr())
    handler.setFormatter(formatter)
    handler.set_name("taskapp")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "taskapp"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # The same processors and renderer, so the request line reads like every other.
    log = structlog.wrap_logger(
        structlog.WriteLogger(cast(TextIO, _CurrentStderr())),
        processors=[*context, _name_request_logger, stamp, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
    )


def _name_request_logger(
    _logger: object, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    event["logger"] = REQUEST_LOGGER
    return event


def init_logging(app: Flask) -> None:
    configure_logging(app.config["LOG_FORMAT"], app.config["LOG_LEVEL"])
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_forget_request)


def _start_request() -> None:
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = offered if VALID_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
    g.request_started = time.perf_counter()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=g.request_id)


def _finish_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id is None:  # a failure before _start_request ran
        return response
    response.headers[REQUEST_ID_HEADER] = request_id
    log.info(
        "request",
        method=request.method,
        route=request.url_rule.rule if request.url_rule else None,
        status=response.status_code,
        duration_ms=round((time.perf_counter() - g.request_started) * 1000, 2),
        user_id=g.get("user_id"),
        client_ip=request.remote_addr,
    )
    return response


def _forget_request(_error: BaseException | None) -> None:
    structlog.contextvars.clear_contextvars()
