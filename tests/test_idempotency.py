"""Idempotency-Key on POST: a retry never creates a second task."""

from datetime import timedelta

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import IntegrityError

from taskapp.config import database_url as normalized_url
from taskapp.extensions import db
from taskapp.models import IdempotencyKey, Task
from taskapp.tasks import idempotency
from taskapp.timestamps import utcnow
from tests.test_concurrency import race

TASKS = "/api/alice/tasks"

# Also through PgBouncer in transaction pooling, as several hosts reach PostgreSQL (conftest).
pytestmark = pytest.mark.through_pgbouncer


@pytest.fixture
def post(auth):
    """`post(client, body, key)`: create a task as `user` with that Idempotency-Key."""

    def send(client, body, key, user="alice"):
        headers = {**auth(user), "Idempotency-Key": key}
        return client.post(f"/api/{user}/tasks", json=body, headers=headers)

    return send


def task_count(app, user="alice"):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Task).where(Task.user_id == user))


def test_retry_with_the_same_key_returns_the_first_201_and_creates_nothing(app, client, post):
    first = post(client, {"title": "Pay rent", "priority": 5}, "rent-2026-01")
    again = post(client, {"title": "Pay rent", "priority": 5}, "rent-2026-01")
    assert first.status_code == again.status_code == 201
    assert again.json == first.json
    assert again.headers["Location"] == first.headers["Location"]
    assert first.headers["Idempotent-Replayed"] == "false"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert task_count(app) == 1


def test_replay_answers_the_original_even_after_the_task_changed(client, auth, post):
    first = post(client, {"title": "Draft"}, "draft-1")
    client.put(f"{TASKS}/{first.json['id']}", json={"title": "Final"}, headers=auth())
    again = post(client, {"title": "Draft"}, "draft-1")
    assert again.json == first.json


def test_same_body_in_another_spelling_is_the_same_request(app, client, auth):
    headers = {**auth(), "Idempotency-Key": "k", "Content-Type": "application/json"}
    first = client.post(TASKS, data='{"title": "A", "priority": 2}', headers=headers)
    again = client.post(TASKS, data='{ "priority":2,"title":"A" }', headers=headers)
    assert again.status_code == 201
    assert again.json["id"] == first.json["id"]
    assert task_count(app) == 1


def test_same_key_with_another_body_is_422_and_creates_nothing(app, client, post):
    post(client, {"title": "One"}, "shared-key")
    response = post(client, {"title": "Two"}, "shared-key")
    assert response.status_code == 422
    assert response.json["errors"] == {
        "Idempotency-Key": ["This key was already used with a different body."]
    }
    assert task_count(app) == 1


def test_keys_are_per_user(app, client, post):
    alices = post(client, {"title": "Same"}, "same-key")
    bobs = post(client, {"title": "Same"}, "same-key", user="bob")
    assert bobs.status_code == 201
    assert bobs.json["id"] != alices.json["id"]
    assert bobs.headers["Idempotent-Replayed"] == "false"
    assert task_count(app, "bob") == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there", "bell\x07"])
def test_malformed_key_is_422_and_creates_nothing(app, client, key, auth):
    headers = {**auth(), "Idempotency-Key": key}
    response = client.post(TASKS, json={"title": "x"}, headers=headers)
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json["errors"]
    assert task_count(app) == 0


def test_longest_key_is_accepted(client, post):
    assert post(client, {"title": "x"}, "k" * 255).status_code == 201


def test_invalid_body_with_a_key_stores_no_key(app, client, post):
    assert post(client, {"title": ""}, "bad-body").status_code == 422
    assert post(client, {"title": "fixed"}, "bad-body").status_code == 201
    assert task_count(app) == 1


def age_keys(app, hours):
    with app.app_context():
        for record in db.session.scalars(select(IdempotencyKey)):
            record.created_at = utcnow() - timedelta(hours=hours)
        db.session.commit()


def test_key_older_than_24_hours_is_free_again(app, client, post):
    first = post(client, {"title": "Weekly review"}, "weekly")
    age_keys(app, 25)
    again = post(client, {"title": "Weekly review"}, "weekly")
    assert again.status_code == 201
    assert again.json["id"] != first.json["id"]
    assert task_count(app) == 2


def test_purge_deletes_only_expired_keys(app, client, post):
    post(client, {"title": "old"}, "old-key")
    age_keys(app, 25)
    post(client, {"title": "new"}, "new-key")
    result = app.test_cli_runner().invoke(args=["purge-idempotency-keys"])
    assert result.exit_code == 0, result.output
    assert "Deleted 1 expired idempotency keys." in result.output
    with app.app_context():
        assert db.session.scalars(select(IdempotencyKey.key)).all() == ["new-key"]


def test_a_failed_write_leaves_neither_task_nor_key(app):
    with app.app_context():
        broken = Task(id=None, user_id="alice", title="x", priority=9)  # breaks a CHECK
        broken.created_at = utcnow()
        with pytest.raises(IntegrityError):
            idempotency.create("alice", "k", {"title": "x"}, broken, "{}")
        db.session.rollback()
        assert db.session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0
        assert db.session.scalar(select(func.count()).select_from(Task)) == 0


@pytest.mark.parametrize("database_url", ["postgresql", "pgbouncer"], indirect=True)
def test_racing_posts_with_one_key_create_one_task_and_all_name_it(app, http_server, post, auth):
    headers = {**auth(), "Idempotency-Key": "double-click"}
    body = {"title": "Only once"}
    statuses = race([("POST", f"{http_server}{TASKS}", body, headers)] * 20)
    assert task_count(app) == 1
    assert set(statuses) <= {201, 409}
    assert statuses[201] >= 1
    with app.app_context():
        task_id = db.session.scalar(select(Task.id))
    replies = [post(app.test_client(), body, "double-click") for _ in range(3)]
    assert {reply.json["id"] for reply in replies} == {str(task_id)}


@pytest.mark.parametrize("database_url", ["postgresql", "pgbouncer"], indirect=True)
def test_key_whose_first_request_is_in_flight_is_409(app, client, database_url, post):
    # Another transaction holds the key, as a first request still running would.
    engine = create_engine(normalized_url(database_url, "/unused"))
    holder = engine.connect()
    transaction = holder.begin()
    holder.execute(
        text(
            "INSERT INTO idempotency_keys"
            " (user_id, key, fingerprint, task_id, response, created_at)"
            " VALUES ('alice', 'busy', 'x', gen_random_uuid(), '{}', now())"
        )
    )
    try:
        response = post(client, {"title": "x"}, "busy")
    finally:
        transaction.rollback()
        holder.close()
        engine.dispose()
    assert response.status_code == 409
    assert response.json == {"detail": "A request with this Idempotency-Key is still in progress."}
    assert task_count(app) == 0
    assert post(client, {"title": "x"}, "busy").status_code == 201
