"""The tasks blueprint: `/api/<user_id>/tasks`, one user's tasks and nobody else's.

`owner_required` has checked that `user_id` is the caller before any view runs,
and every query below filters on it.
"""

from __future__ import annotations

import uuid
from http import HTTPStatus
from urllib.parse import urlencode

from flask import Flask, Response, current_app, request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from werkzeug.http import quote_etag
from werkzeug.routing import BaseConverter

from taskapp.auth.tokens import owner_required
from taskapp.extensions import api, db
from taskapp.models import FIRST_VERSION, Task
from taskapp.tasks import idempotency
from taskapp.tasks.listing import InvalidCursor, ListQuery, count_query, encode_cursor, page_query
from taskapp.tasks.schemas import (
    CompletionSchema,
    TaskCreateSchema,
    TaskListQuerySchema,
    TaskResponseSchema,
    TaskUpdateSchema,
)
from taskapp.timestamps import utcnow
from taskapp.web.request_body import StrictJSONParser, check_request_body

blp = Blueprint(
    "tasks", __name__, url_prefix="/api/<user_id>/tasks", description="A signed-in user's tasks."
)


blp.ARGUMENTS_PARSER = StrictJSONParser()
blp.before_request(check_request_body)


class TaskIdConverter(BaseConverter):
    """Any path segment, documented as a UUID: `find_task` answers 422 when it is not one
    (Werkzeug's own uuid converter would answer 404, as if the route did not exist)."""


def init_tasks(app: Flask) -> None:
    app.url_map.converters["task_id"] = TaskIdConverter
    api.register_converter(TaskIdConverter, lambda _converter: {"type": "string", "format": "uuid"})
    api.register_blueprint(blp)


def errors(*statuses: int):
    """Document the error answers a view can give, each with taskapp's error body."""

    def document(view):
        for status in statuses:
            view = blp.alt_response(status, response=HTTPStatus(status).name)(view)
        return view

    return document


def _header(description: str) -> dict:
    return {"description": description, "schema": {"type": "string"}}


ETAG = {"ETag": _header("The task's version, for If-Match and If-None-Match.")}
# Every operation needs a token for the path's user, is rate limited, and may meet a
# database outage.
ALWAYS = (401, 403, 429, 503)
WITH_BODY = (400, 413, 415, 422)


def find_task(user_id: str, task_id: str, for_update: bool = False) -> Task:
    """The caller's task with this id, or 404: another user's task does not exist for them.

    `for_update` locks the row (PostgreSQL) until the transaction ends, so a second
    writer waits and then sees the first one's result instead of failing mid-way.
    """
    try:
        key = uuid.UUID(task_id)
    except ValueError:
        abort(422, messages={"path": {"task_id": ["Not a valid UUID."]}})
    task = db.session.get(Task, (user_id, key), with_for_update=for_update)
    if task is None:
        abort(404, message="Task not found.")
    return task


def next_page_url(cursor: str) -> str:
    """This request's URL with every parameter kept and the cursor replaced."""
    params = [(k, v) for k, v in request.args.items(multi=True) if k != "cursor"]
    return f"{request.base_url}?{urlencode([*params, ('cursor', cursor)])}"


def check_if_match(task: Task) -> None:
    """412 when the client's `If-Match` names an older version: nothing is changed."""
    if request.if_match and not request.if_match.contains(str(task.version)):
        abort(412)


def new_task(user_id: str, fields: dict) -> Task:
    """A task with every column set, so it can be answered before it is written."""
    now = utcnow()
    values = {name: value for name, value in fields.items() if name != "is_completed"}
    task = Task(id=uuid.uuid4(), user_id=user_id, created_at=now, updated_at=now, **values)
    task.set_completed(fields.get("is_completed", False), at=now)
    return task


def task_url(user_id: str, task_id) -> str:
    return url_for("tasks.TaskItem", user_id=user_id, task_id=task_id, _external=True)


def etag_header(version: int) -> dict:
    """A task's ETag is its version: SQLAlchemy bumps it on every change."""
    return {"ETag": quote_etag(str(version))}


@blp.route("")
class TaskCollection(MethodView):
    decorators = [owner_required]

    @blp.arguments(TaskListQuerySchema, location="query")
    @blp.response(
        200,
        TaskResponseSchema(many=True),
        headers={
            "Link": _header('`<url>; rel="next"` while there is a next page (RFC 8288).'),
            "X-Total-Count": _header("How many tasks match the filters, on every page."),
        },
    )
    @errors(*ALWAYS, 422)
    def get(self, args: dict, user_id: str):
        """List your tasks, newest first, a page at a time.

        `Link: <...>; rel="next"` names the next page while there is one;
        `X-Total-Count` counts every task that matches the filters.
        """
        query = ListQuery(user_id=user_id, **args)
        try:
            statement = page_query(query)
        except InvalidCursor:
            abort(422, messages={"query": {"cursor": ["Not a valid cursor for this list."]}})
        tasks = db.session.scalars(statement).all()
        headers = {"X-Total-Count": str(db.session.scalar(count_query(query)))}
        if len(tasks) > query.limit:
            tasks = tasks[: query.limit]
            headers["Link"] = f'<{next_page_url(encode_cursor(query, tasks[-1]))}>; rel="next"'
        return tasks, 200, headers

    @blp.arguments(TaskCreateSchema)
    @blp.response(
        201, TaskResponseSchema, headers={"Location": _header("The new task's URL."), **ETAG}
    )
    @errors(*ALWAYS, *WITH_BODY, 409)
    def post(self, fields: dict, user_id: str):
        """Create a task.

        With an `Idempotency-Key` header, a retry with the same key and body within
        24 hours gets the first 201 again (with `Idempotent-Replayed: true`) and
        creates nothing; the same key with another body is a 422, and a retry while
        the first request is still running is a 409.
        """
        key = idempotency.key_from(request.headers.get(idempotency.HEADER))
        task = new_task(user_id, fields)
        if key is None:
            db.session.add(task)
            db.session.commit()
            return (
                task,
                201,
                {"Location": task_url(task.user_id, task.id), **etag_header(task.version)},
            )
        body = current_app.json.dumps(TaskResponseSchema().dump(task))
        created = idempotency.create_once(user_id, key, fields, task, body)
        headers = {
            "Location": task_url(user_id, created.task_id),
            **etag_header(FIRST_VERSION),
            "Idempotent-Replayed": "true" if created.replayed else "false",
        }
        return Response(created.body, 201, headers=headers, mimetype="application/json")


@blp.route("/<task_id:task_id>")
class TaskItem(MethodView):
    decorators = [owner_required]

    @blp.response(200, TaskResponseSchema, headers=ETAG)
    @blp.alt_response(304, response="NOT_MODIFIED", headers=ETAG)
    @errors(*ALWAYS, 404, 422)
    def get(self, user_id: str, task_id: str):
        """Get one task."""
        task = find_task(user_id, task_id)
        # Weak comparison (RFC 9110): a proxy that compresses may weaken the ETag.
        if request.if_none_match.contains_weak(str(task.version)):
            return Response(status=304, headers=etag_header(task.version))
        return task, 200, etag_header(task.version)

    @blp.arguments(TaskUpdateSchema)
    @blp.response(200, TaskResponseSchema, headers=ETAG)
    @errors(*ALWAYS, *WITH_BODY, 404, 412)
    def put(self, fields: dict, user_id: str, task_id: str):
        """Change a task: only the fields sent are changed."""
        task = find_task(user_id, task_id, for_update=True)
        check_if_match(task)
        if "is_completed" in fields:
            task.set_completed(fields.pop("is_completed"))
        for name, value in fields.items():
            setattr(task, name, value)
        db.session.commit()
        return task, 200, etag_header(task.version)

    @blp.response(204)
    @errors(*ALWAYS, 404, 412, 422)
    def delete(self, user_id: str, task_id: str):
        """Delete a task."""
        task = find_task(user_id, task_id, for_update=True)
        check_if_match(task)
        db.session.delete(task)
        db.session.commit()


@blp.route("/<task_id:task_id>/complete")
class TaskCompletion(MethodView):
    decorators = [owner_required]

    @blp.arguments(CompletionSchema, required=False)
    @blp.response(200, TaskResponseSchema, headers=ETAG)
    @errors(*ALWAYS, *WITH_BODY, 404, 412)
    def patch(self, fields: dict, user_id: str, task_id: str):
        """Complete or reopen a task: toggles without a body, sets `is_completed` with one."""
        task = find_task(user_id, task_id, for_update=True)
        check_if_match(task)
        if "is_completed" in fields:
            task.set_completed(fields["is_completed"])
        elif request.get_data(cache=True).strip():
            # A body means "set": `{}` must not toggle on every retry.
            abort(422, messages={"json": {"is_completed": ["Missing data for required field."]}})
        else:
            task.set_completed(not task.is_completed)
        db.session.commit()
        return task, 200, etag_header(task.version)
