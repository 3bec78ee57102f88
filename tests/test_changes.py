"""The change feed, `GET /api/<user>/tasks/changes`, on both databases: its shape and order,
every write path numbered, tokens checked, tombstones purged into a 410, and the feed
protected as the task endpoints are. The concurrency guarantee: tests/test_change_sync.py."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from taskapp.config import ConfigError, load_config
from taskapp.extensions import db
from taskapp.models import TaskTombstone
from taskapp.tasks.changes import Position, encode_token
from taskapp.timestamps import utcnow
from tests.support import HS_SECRET

FEED = "/api/{user}/tasks/changes"


@pytest.fixture
def changes(client, auth):
    """`changes(since=None, user="alice", **params)`: the feed's response."""

    def get(since: str | None = None, user: str = "alice", **params):
        query = {**params, **({"since": since} if since is not None else {})}
        return client.get(FEED.format(user=user), query_string=query, headers=auth(user))

    return get


@pytest.fixture
def sync(changes):
    """`sync(since=None)`: every page from `since` on; returns (changes, last next)."""

    def follow(since: str | None = None, user: str = "alice", limit: int | None = None):
        collected = []
        while True:
            response = changes(since, user, **({"limit": limit} if limit else {}))
            assert response.status_code == 200, response.json
            collected += response.json["changes"]
            since = response.json["next"]
            if not response.json["has_more"]:
                return collected, since

    return follow


def current(client, auth, task_id: str, user: str = "alice") -> dict:
    response = client.get(f"/api/{user}/tasks/{task_id}", headers=auth(user))
    assert response.status_code == 200
    return response.json


def test_without_since_every_current_task_is_an_upsert(client, auth, create_task, changes):
    kept = [create_task(title=f"Task {n}") for n in range(3)]
    gone = create_task(title="Deleted")
    assert client.delete(f"/api/alice/tasks/{gone['id']}", headers=auth()).status_code == 204

    response = changes()

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert set(response.json) == {"changes", "next", "has_more"}
    assert response.json["has_more"] is False
    assert isinstance(response.json["next"], str)
    assert response.json["changes"] == [
        {"op": "upsert", "task": current(client, auth, task["id"])} for task in kept
    ]


def test_a_user_who_never_wrote_gets_an_empty_feed_and_a_token_to_poll_with(changes, sync):
    response = changes()
    assert response.status_code == 200
    assert response.json["changes"] == [] and response.json["has_more"] is False
    assert changes(response.json["next"]).json["changes"] == []


def test_changes_come_in_the_order_they_happened(client, auth, create_task, sync):
    first, second, third = (create_task(title=title) for title in ("one", "two", "three"))
    _, token = sync()
    client.patch(f"/api/alice/tasks/{second['id']}", json={"priority": 5}, headers=auth())
    client.delete(f"/api/alice/tasks/{third['id']}", headers=auth())
    client.patch(f"/api/alice/tasks/{first['id']}/complete", headers=auth())

    got, _ = sync(token)

    assert [(change["op"], change.get("task", change)["id"]) for change in got] == [
        ("upsert", second["id"]),
        ("delete", third["id"]),
        ("upsert", first["id"]),
    ]


def test_a_task_changed_many_times_appears_once_as_its_latest_state(
    client, auth, create_task, sync
):
    task = create_task()
    other = create_task(title="Untouched after the token")
    _, token = sync()
    for priority in (2, 3, 4, 5):
        client.patch(f"/api/alice/tasks/{task['id']}", json={"priority": priority}, headers=auth())
    client.patch(f"/api/alice/tasks/{task['id']}/complete", headers=auth())

    got, _ = sync(token)

    assert got == [{"op": "upsert", "task": current(client, auth, task["id"])}]
    assert got[0]["task"]["priority"] == 5 and got[0]["task"]["is_completed"] is True
    assert other["id"] not in json.dumps(got)


def test_a_deleted_task_is_a_tombstone(client, auth, create_task, sync):
    task = create_task()
    _, token = sync()
    before = utcnow()
    assert client.delete(f"/api/alice/tasks/{task['id']}", headers=auth()).status_code == 204

    [change], _ = sync(token)

    assert set(change) == {"op", "id", "deleted_at"}
    assert change["op"] == "delete" and change["id"] == task["id"]
    assert change["deleted_at"].endswith("Z")
    assert before <= _parse(change["deleted_at"]) <= utcnow()


def test_a_write_that_changes_nothing_is_not_a_change(client, auth, create_task, sync):
    task = create_task(title="Same", priority=3)
    _, token = sync()
    for body in ({}, {"title": "Same", "priority": 3}):
        response = client.patch(f"/api/alice/tasks/{task['id']}", json=body, headers=auth())
        assert response.status_code == 200
    assert sync(token)[0] == []


# --- every write path is numbered ---------------------------------------------------


def _post(client, auth, task):
    response = client.post("/api/alice/tasks", json={"title": "New"}, headers=auth())
    return "upsert", response.json["id"]


def _post_with_key(client, auth, task):
    headers = {**auth(), "Idempotency-Key": str(uuid.uuid4())}
    first = client.post("/api/alice/tasks", json={"title": "Once"}, headers=headers)
    replay = client.post("/api/alice/tasks", json={"title": "Once"}, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    return "upsert", first.json["id"]


def _put(client, auth, task):
    client.put(f"/api/alice/tasks/{task['id']}", json={"title": "Put"}, headers=auth())
    return "upsert", task["id"]


def _patch(client, auth, task):
    client.patch(f"/api/alice/tasks/{task['id']}", json={"description": "x"}, headers=auth())
    return "upsert", task["id"]


def _tags(client, auth, task):
    # Tags live on the task's row (and, for the filter, in task_tags): a change of
    # tags alone is a change of the task.
    client.patch(f"/api/alice/tasks/{task['id']}", json={"tags": ["Work"]}, headers=auth())
    return "upsert", task["id"]


def _due_date(client, auth, task):
    body = {"due_at": "2026-12-01T09:00:00+01:00"}
    client.patch(f"/api/alice/tasks/{task['id']}", json=body, headers=auth())
    return "upsert", task["id"]


def _toggle(client, auth, task):
    client.patch(f"/api/alice/tasks/{task['id']}/complete", headers=auth())
    return "upsert", task["id"]


def _complete(client, auth, task):
    body = {"is_completed": True}
    client.patch(f"/api/alice/tasks/{task['id']}/complete", json=body, headers=auth())
    return "upsert", task["id"]


def _delete(client, auth, task):
    client.delete(f"/api/alice/tasks/{task['id']}", headers=auth())
    return "delete", task["id"]


WRITES = [_post, _post_with_key, _put, _patch, _tags, _due_date, _toggle, _complete, _delete]


@pytest.mark.parametrize("write", WRITES, ids=lambda write: write.__name__.strip("_"))
def test_every_write_endpoint_appears_in_the_feed(client, auth, create_task, sync, write):
    task = create_task()
    _, token = sync()

    op, task_id = write(client, auth, task)

    got, _ = sync(token)
    assert [(change["op"], change.get("task", change)["id"]) for change in got] == [(op, task_id)]
    if op == "upsert":
        assert got[0]["task"] == current(client, auth, task_id)


def test_the_seed_command_is_in_the_feed(app, sync):
    _, token = sync()
    result = app.test_cli_runner().invoke(args=["seed", "alice", "--count", "3"])
    assert result.exit_code == 0, result.output
    got, _ = sync(token)
    assert [change["task"]["title"] for change in got] == [f"Demo task {n}" for n in (1, 2, 3)]


# --- pages, limits and tokens --------------------------------------------------------


def test_pages_follow_one_another_until_has_more_is_false(create_task, changes, sync):
    created = [create_task(title=f"Task {n}")["id"] for n in range(5)]
    first = changes(limit=2)
    assert first.json["has_more"] is True
    assert len(first.json["changes"]) == 2
    got, token = sync(limit=2)
    assert [change["task"]["id"] for change in got] == created
    # Polling with the last token: nothing new, and a token that keeps working.
    again = changes(token)
    assert again.json == {"changes": [], "next": again.json["next"], "has_more": False}
    assert changes(again.json["next"]).status_code == 200


@pytest.mark.parametrize("limit", ["1", "1000"])
def test_limit_takes_1_to_1000(create_task, changes, limit):
    create_task()
    assert changes(limit=limit).status_code == 200


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten", "2.5", ""])
def test_a_limit_outside_1_to_1000_is_a_422(changes, limit):
    response = changes(limit=limit)
    assert response.status_code == 422
    assert set(response.json) == {"detail", "errors"} and "limit" in response.json["errors"]


def _sealed(payload: object) -> str:
    """A token as the server builds one, around any payload (see taskapp.tasks.changes)."""
    body = json.dumps(payload, separators=(",", ":"))
    checksum = hashlib.sha256(body.encode()).hexdigest()[:16]
    return base64.urlsafe_b64encode(f"{checksum}{body}".encode()).rstrip(b"=").decode()


ALICE = hashlib.sha256(b"alice").hexdigest()[:16]
MALFORMED = {
    "not base64": "!!!",
    "not UTF-8": base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    "bad checksum": _sealed({"s": 0, "f": 0, "u": ALICE}).swapcase(),
    "not JSON": base64.urlsafe_b64encode(b"0" * 16 + b"{").decode(),
    "a list": _sealed([0, 0, ALICE]),
    "missing floor": _sealed({"s": 0, "u": ALICE}),
    "extra key": _sealed({"s": 0, "f": 0, "u": ALICE, "x": 1}),
    "negative": _sealed({"s": -1, "f": 0, "u": ALICE}),
    "a string": _sealed({"s": "1", "f": 0, "u": ALICE}),
    "a float": _sealed({"s": 1.5, "f": 0, "u": ALICE}),
    "a boolean": _sealed({"s": True, "f": 0, "u": ALICE}),
    "past BIGINT": _sealed({"s": 2**63, "f": 0, "u": ALICE}),
    "bob's": _sealed({"s": 0, "f": 0, "u": hashlib.sha256(b"bob").hexdigest()[:16]}),
    "too long": "A" * 1000,
}


@pytest.mark.parametrize("token", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_or_edited_token_is_a_422(changes, token):
    response = changes(token)
    assert response.status_code == 422
    assert response.json["errors"] == {"since": [response.json["errors"]["since"][0]]}


def test_a_list_cursor_is_not_a_feed_token(client, auth, create_task, changes):
    create_task(), create_task()
    link = client.get("/api/alice/tasks?limit=1", headers=auth()).headers["Link"]
    cursor = link.split("cursor=")[1].split(">")[0]
    assert changes(cursor).status_code == 422


def test_another_users_token_is_a_422(create_task, changes):
    create_task(user="bob")
    bobs = changes(user="bob").json["next"]
    response = changes(bobs)
    assert response.status_code == 422
    assert "since" in response.json["errors"]


def test_a_token_ahead_of_the_server_is_a_410(create_task, changes):
    create_task()
    response = changes(encode_token("alice", Position(seq=99, floor=0)))
    assert response.status_code == 410
    assert "without since" in response.json["detail"]


def test_unknown_parameters_are_refused_with_a_hint(changes):
    response = changes(updated_since="2026-01-01T00:00:00Z")
    assert response.status_code == 422
    assert "since" in response.json["errors"]["updated_since"][0]


def test_another_users_changes_never_appear(client, auth, create_task, sync):
    mine = create_task()
    _, token = sync()
    theirs = create_task(user="bob")
    client.delete(f"/api/bob/tasks/{theirs['id']}", headers=auth("bob"))
    create_task(user="bob")
    assert sync(token)[0] == []
    got, _ = sync()
    assert [change["task"]["id"] for change in got] == [mine["id"]]


# --- tombstones are purged; an older token is a 410 -----------------------------------


def backdate_tombstones(app, days: int) -> None:
    with app.app_context():
        db.session.execute(update(TaskTombstone).values(deleted_at=utcnow() - timedelta(days=days)))
        db.session.commit()


def test_purge_keeps_tombstones_younger_than_tombstone_days(app, client, auth, create_task, sync):
    task = create_task()
    _, token = sync()
    client.delete(f"/api/alice/tasks/{task['id']}", headers=auth())
    backdate_tombstones(app, 29)
    result = app.test_cli_runner().invoke(args=["purge"])
    assert result.exit_code == 0, result.output
    assert "Deleted 0 tombstones older than 30 days." in result.output
    assert [change["op"] for change in sync(token)[0]] == ["delete"]


def test_a_token_older_than_the_purge_is_a_410_and_a_fresh_start_works(
    app, client, auth, create_task, changes, sync
):
    kept, gone = create_task(title="Kept"), create_task(title="Gone")
    _, token = sync()
    client.delete(f"/api/alice/tasks/{gone['id']}", headers=auth())
    backdate_tombstones(app, 31)

    result = app.test_cli_runner().invoke(args=["purge"])
    assert result.exit_code == 0, result.output
    assert "Deleted 1 tombstones older than 30 days." in result.output

    response = changes(token)
    assert response.status_code == 410
    assert response.mimetype == "application/json"
    assert set(response.json) == {"detail"}
    assert "without since" in response.json["detail"]
    got, fresh = sync()
    assert [change["task"]["id"] for change in got] == [kept["id"]]
    create_task(title="After")
    assert [change["task"]["title"] for change in sync(fresh)[0]] == ["After"]


def test_paging_from_nothing_is_not_sent_back_by_an_earlier_purge(
    app, client, auth, create_task, sync
):
    # Old tasks numbered below the purged deletions: a sync from nothing pages through
    # them with tokens below the purged number, and must not meet a 410 for tombstones
    # of tasks that were gone before it began.
    old = [create_task(title=f"Old {n}")["id"] for n in range(3)]
    for _ in range(2):
        doomed = create_task(title="Doomed")
        client.delete(f"/api/alice/tasks/{doomed['id']}", headers=auth())
    backdate_tombstones(app, 31)
    assert app.test_cli_runner().invoke(args=["purge"]).exit_code == 0
    got, _ = sync(limit=1)
    assert [change["task"]["id"] for change in got] == old


def test_the_purge_commands_first_name_purges_tombstones_too(app, client, auth, create_task):
    task = create_task()
    client.delete(f"/api/alice/tasks/{task['id']}", headers=auth())
    backdate_tombstones(app, 31)
    result = app.test_cli_runner().invoke(args=["purge-idempotency-keys"])
    assert result.exit_code == 0, result.output
    assert "expired idempotency keys" in result.output
    assert "Deleted 1 tombstones" in result.output


def test_tombstone_days_is_read_from_the_setting(make_app, auth):
    app = make_app(BETTER_AUTH_SECRET=HS_SECRET, TOMBSTONE_DAYS="7")
    client = app.test_client()
    task = client.post("/api/alice/tasks", json={"title": "x"}, headers=auth()).json
    client.delete(f"/api/alice/tasks/{task['id']}", headers=auth())
    backdate_tombstones(app, 8)
    result = app.test_cli_runner().invoke(args=["purge"])
    assert "Deleted 1 tombstones older than 7 days." in result.output


@pytest.mark.parametrize("value", ["0", "-3", "1.5", "a week"])
def test_a_tombstone_days_that_cannot_work_stops_start_up(value, tmp_path):
    with pytest.raises(ConfigError, match="TOMBSTONE_DAYS"):
        load_config({"BETTER_AUTH_SECRET": HS_SECRET, "TOMBSTONE_DAYS": value}, str(tmp_path))


def test_tombstone_days_defaults_to_30(tmp_path):
    assert load_config({"BETTER_AUTH_SECRET": HS_SECRET}, str(tmp_path))["TOMBSTONE_DAYS"] == 30


# --- protected as the task endpoints are ---------------------------------------------


def test_the_feed_needs_a_token_for_the_paths_user(client, auth):
    assert client.get(FEED.format(user="alice")).status_code == 401
    response = client.get(FEED.format(user="alice"), headers=auth("bob"))
    assert response.status_code == 403
    assert set(response.json) == {"detail"}


def test_changes_is_a_route_of_its_own_not_a_task_id(client, auth):
    # As a task id, `changes` would be a 422 (not a UUID): GET is the feed's.
    response = client.get(FEED.format(user="alice"), headers=auth())
    assert response.status_code == 200
    assert set(response.json) == {"changes", "next", "has_more"}
    # The feed takes GET only; another method still reaches the task item, which says
    # `changes` is no task id.
    response = client.delete(FEED.format(user="alice"), headers=auth())
    assert response.status_code == 422
    assert "task_id" in response.json["errors"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_feed_counts_against_the_users_rate_limit(make_app, auth):
    app = make_app(
        BETTER_AUTH_SECRET=HS_SECRET,
        RATELIMIT_ENABLED="true",
        RATELIMIT_PER_USER="2/minute",
        RATELIMIT_PER_IP="1000/minute",
    )
    client = app.test_client()
    feed = FEED.format(user="alice")
    assert client.get(feed, headers=auth()).headers["X-RateLimit-Remaining"] == "1"
    assert client.get("/api/alice/tasks", headers=auth()).status_code == 200
    response = client.get(feed, headers=auth())
    assert response.status_code == 429
    assert "Retry-After" in response.headers


def _parse(timestamp: str):
    from datetime import datetime

    return datetime.fromisoformat(timestamp)
