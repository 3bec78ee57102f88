"""The tasks blueprint: `/api/<user_id>/tasks`, one user's tasks and nobody else's.

Every view needs a verified token for the user in its path and counts against
that user's rate limit (`PROTECTED`), and every query below filters on the user.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

from flask import Flask, Response, current_app, request, url_for
from webargs.flaskparser import abort  # flask-smorest's abort, typed
from werkzeug.http import quote_etag
from werkzeug.routing import BaseConverter

from taskapp.auth.tokens import owner_required, token_required
from taskapp.extensions import api, db
from taskapp.models import FIRST_VERSION, Task
from taskapp.tasks import idempotency, json_reads
from taskapp.tasks.listing import InvalidCursor, ListQuery, encode_cursor
from taskapp.tasks.schemas import (
    CompletionSchema,
    TaskCreateSchema,
    TaskListQuerySchema,
    TaskResponseSchema,
    TaskUpdateSchema,
)
from taskapp.timestamps import utcnow
from taskapp.web.api import Blueprint, MethodView
from taskapp.web.openapi import ALWAYS, ETAG, WITH_BODY, header
from taskapp.web.ratelimit import per_user_limit

blp = Blueprint(
    "tasks", __name__, url_prefix="/api/<user_id>/tasks", description="A signed-in user's tasks."
)

Fields = dict[str, Any]  # a request's validated body or query
Headers = dict[str, str]
Found = TypeVar("Found")

# One instance for every create (webargs and flask-smorest are handed instances too).
CREATED_TASK = TaskResponseSchema()

# `Prefer: count=exact` (RFC 7240; PostgREST's name) asks the list for X-Total-Count.
EXACT_COUNT = "count=exact"

# MethodView applies these first to last, so a request meets them last to first:
# the token is verified, counted against its user, then checked to own the path.
PROTECTED: list[Callable[..., Any]] = [owner_required, per_user_limit, token_required]


class TaskIdConverter(BaseConverter):
    """Any path segment, documented as a UUID: `task_key` answers 422 when it is not one
    (Werkzeug's own uuid converter would answer 404, as if the route did not exist)."""


def init_tasks(app: Flask) -> None:
    app.url_map.converters["task_id"] = TaskIdConverter
    api.register_converter(TaskIdConverter, lambda _converter: {"type": "string", "format": "uuid"})
    api.register_blueprint(blp)


def found(task: Found | None) -> Found:
    """`task`, or 404 when the caller has none with that id: another user's task does
    not exist for them."""
    if task is None:
        abort(404, message="Task not found.")
    return task


def find_task(user_id: str, task_id: str, for_update: bool = False) -> Task:
    """The caller's task with this id, or 404.

    `for_update` locks the row (PostgreSQL) until the transaction ends, so a second
    writer waits and then sees the first one's result instead of failing mid-way.
    """
    return found(db.session.get(Task, (user_id, task_key(task_id)), with_for_update=for_update))


def task_key(task_id: str) -> uuid.UUID:
    """The path's task id, or 422."""
    try:
        return uuid.UUID(task_id)
    except ValueError:
        abort(422, messages={"path": {"task_id": ["Not a valid UUID."]}})


def prefers_exact_count() -> bool:
    """Whether a `Prefer` header (RFC 7240) asks for `count=exact`."""
    return any(
        preference.split(";")[0].replace(" ", "").lower() == EXACT_COUNT
        for value in request.headers.getlist("Prefer")
        for preference in value.split(",")
    )


def next_page_url(cursor: str) -> str:
    """This request's URL with every parameter kept and the cursor replaced."""
    params = [(k, v) for k, v in request.args.items(multi=True) if k != "cursor"]
    return f"{request.base_url}?{urlencode([*params, ('cursor', cursor)])}"


def find_task_to_change(user_id: str, task_id: str) -> Task:
    """The caller's task, locked for this transaction, once the client's `If-Match`
    holds: 412 when it names an older version, and nothing is changed."""
    task = find_task(user_id, task_id, for_update=True)
    if request.if_match and not request.if_match.contains(str(task.version)):
        abort(412)
    return task


def new_task(user_id: str, fields: Fields) -> Task:
    """A task with every column set, so it can be answered before it is written."""
    now = utcnow()
    values = {name: value for name, value in fields.items() if name != "is_completed"}
    values.setdefault("tags", [])  # the column's default, which the answer needs now
    task = Task(id=uuid.uuid4(), user_id=user_id, created_at=now, updated_at=now, **values)
    task.set_completed(fields.get("is_completed", False), at=now)
    return task


def task_url(user_id: str, task_id: uuid.UUID) -> str:
    return url_for("tasks.TaskItem", user_id=user_id, task_id=task_id, _external=True)


def etag_header(version: int) -> Headers:
    """A task's ETag is its version: SQLAlchemy bumps it on every change."""
    return {"ETag": quote_etag(str(version))}


@blp.route("")
class TaskCollection(MethodView):
    decorators = PROTECTED

    @blp.arguments(TaskListQuerySchema(), location="query")
    @blp.response(
        200,
        TaskResponseSchema(many=True),
        headers={
            "Link": header('`<url>; rel="next"` while there is a next page (RFC 8288).'),
            "X-Total-Count": header(
                "How many tasks match the filters: on a first page that holds them all, "
                "and on any page when the request sends `Prefer: count=exact`; "
                "absent otherwise."
            ),
            "Preference-Applied": header(
                "`count=exact` when `Prefer: count=exact` was honoured (RFC 7240)."
            ),
        },
    )
    @blp.error_responses(*ALWAYS, 422)
    def get(self, args: Fields, user_id: str) -> Response:
        """List your tasks, newest first, a page at a time.

        `Link: <...>; rel="next"` names the next page while there is one.
        `X-Total-Count` counts every task that matches the filters when it costs
        nothing (a first page that holds them all); on any other page only when the
        request sends `Prefer: count=exact`, which the answer confirms with
        `Preference-Applied: count=exact`.
        """
        query = ListQuery(user_id=user_id, **args)
        exact_count = prefers_exact_count()
        try:
            page = json_reads.task_page(query, count=exact_count)
        except InvalidCursor:
            abort(422, messages={"query": {"cursor": ["Not a valid cursor for this list."]}})
        headers: Headers = {"Vary": "Prefer"}
        if page.more and page.last_id is not None:
            cursor = encode_cursor(query, page.last_key, page.last_id)
            headers["Link"] = f'<{next_page_url(cursor)}>; rel="next"'
        if exact_count:
            headers["X-Total-Count"] = str(page.total)
            headers["Preference-Applied"] = EXACT_COUNT
        elif not query.cursor and not page.more:
            headers["X-Total-Count"] = str(page.rows)  # the first page holds every match
        return Response(page.body, 200, headers=headers, mimetype="application/json")

    @blp.arguments(TaskCreateSchema())
    @blp.response(
        201, TaskResponseSchema, headers={"Location": header("The new task's URL."), **ETAG}
    )
    @blp.error_responses(*ALWAYS, *WITH_BODY, 409)
    def post(self, fields: Fields, user_id: str) -> Response:
        """Create a task.

        With an `Idempotency-Key` header, a retry with the same key and body within
        24 hours gets the first 201 again (with `Idempotent-Replayed: true`) and
        creates nothing; the same key with another body is a 422, and a retry while
        the first request is still running is a 409.
        """
        task = new_task(user_id, fields)
        body = current_app.json.dumps(CREATED_TASK.dump(task), separators=(",", ":"))
        key = request.headers.get(idempotency.HEADER)
        created = idempotency.create(user_id, key, fields, task, body)
        headers = {
            "Location": task_url(user_id, created.task_id),
            **etag_header(FIRST_VERSION),
            **created.headers,
        }
        return Response(created.body, 201, headers=headers, mimetype="application/json")


@blp.route("/<task_id:task_id>")
class TaskItem(MethodView):
    decorators = PROTECTED

    @blp.response(200, TaskResponseSchema, headers=ETAG)
    @blp.alt_response(304, response="NOT_MODIFIED", headers=ETAG)
    @blp.error_responses(*ALWAYS, 404, 422)
    def get(self, user_id: str, task_id: str) -> Response:
        """Get one task."""
        task = found(json_reads.task(user_id, task_key(task_id)))
        # Weak comparison (RFC 9110): a proxy that compresses may weaken the ETag.
        if request.if_none_match.contains_weak(str(task.version)):
            return Response(status=304, headers=etag_header(task.version))
        return Response(
            task.body, 200, headers=etag_header(task.version), mimetype="application/json"
        )

    @blp.arguments(TaskUpdateSchema())
    @blp.response(200, TaskResponseSchema, headers=ETAG)
    @blp.error_responses(*ALWAYS, *WITH_BODY, 404, 412)
    def patch(self, fields: Fields, user_id: str, task_id: str) -> tuple[Task, int, Headers]:
        """Change some of a task's fields: only the fields sent are changed."""
        task = find_task_to_change(user_id, task_id)
        if "is_completed" in fields:
            task.set_completed(fields.pop("is_completed"))
        for name, value in fields.items():
            setattr(task, name, value)
        db.session.commit()
        return task, 200, etag_header(task.version)

    # Older clients change tasks with PUT: it stays, and means what PATCH does.
    put = blp.doc(
        summary="Change a task, as PATCH does: only the fields sent are changed.",
        description="Not a replacement: a field left out keeps its value. Prefer PATCH.",
    )(patch)

    @blp.response(204)
    @blp.error_responses(*ALWAYS, 404, 412, 422)
    def delete(self, user_id: str, task_id: str) -> None:
        """Delete a task."""
        task = find_task_to_change(user_id, task_id)
        db.session.delete(task)
        db.session.commit()


@blp.route("/<task_id:task_id>/complete")
class TaskCompletion(MethodView):
    decorators = PROTECTED

    @blp.arguments(CompletionSchema(), required=False)
    @blp.response(200, TaskResponseSchema, headers=ETAG)
    @blp.error_responses(*ALWAYS, *WITH_BODY, 404, 412)
    def patch(self, fields: Fields, user_id: str, task_id: str) -> tuple[Task, int, Headers]:
        """Complete or reopen a task: toggles without a body, sets `is_completed` with one."""
        task = find_task_to_change(user_id, task_id)
        if "is_completed" in fields:
            task.set_completed(fields["is_completed"])
        elif request.get_data(cache=True).strip():
            # A body means "set": `{}` must not toggle on every retry.
            abort(422, messages={"json": {"is_completed": ["Missing data for required field."]}})
        else:
            task.set_completed(not task.is_completed)
        db.session.commit()
        return task, 200, etag_header(task.version)
