"""Timestamps: ISO 8601 in UTC with a `Z` and microseconds, the same on SQLite and PostgreSQL.

The API tests read `created_at`, `updated_at` and `completed_at` as a client
does; the model tests drive the `UTCDateTime` column type through a real
SQLAlchemy session on the test database.
"""

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError

from taskapp.extensions import db
from taskapp.models import Task

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
FIELDS = ("created_at", "updated_at", "completed_at")
INDIA = timezone(timedelta(hours=5, minutes=30))


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


def task_url(task: dict) -> str:
    return f"/api/alice/tasks/{task['id']}"


# --- the wire format ---------------------------------------------------------------------


@pytest.mark.parametrize("field", FIELDS)
def test_timestamps_are_iso_8601_utc_with_z_and_microseconds(create_task, field):
    task = create_task(is_completed=True)
    assert ISO_UTC.fullmatch(task[field]), task[field]


@pytest.mark.parametrize("field", FIELDS)
def test_timestamps_parse_to_aware_utc_datetimes_of_now(create_task, field):
    before = datetime.now(UTC)
    task = create_task(is_completed=True)
    after = datetime.now(UTC)
    value = parse(task[field])
    assert value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)
    assert before <= value <= after  # the UTC instant, not local time labelled UTC


def test_timestamps_round_trip_unchanged_through_get_and_list(client, auth, create_task):
    task = create_task(is_completed=True)
    fetched = client.get(task_url(task), headers=auth()).json
    listed = client.get("/api/alice/tasks", headers=auth()).json
    for field in FIELDS:
        assert fetched[field] == task[field]
        assert listed[0][field] == task[field]


def test_open_task_has_null_completed_at(create_task):
    assert create_task()["completed_at"] is None


# --- how they move -----------------------------------------------------------------------


def test_created_at_equals_updated_at_on_create(create_task):
    task = create_task()
    assert task["created_at"] == task["updated_at"]


def test_put_increases_updated_at_and_keeps_created_at(client, auth, create_task):
    task = create_task()
    changed = client.put(task_url(task), json={"title": "changed"}, headers=auth()).json
    assert parse(changed["updated_at"]) > parse(task["updated_at"])
    assert changed["created_at"] == task["created_at"]
    assert client.get(task_url(task), headers=auth()).json["updated_at"] == changed["updated_at"]


def test_patch_complete_sets_completed_at_to_now(client, auth, create_task):
    task = create_task()
    before = datetime.now(UTC)
    done = client.patch(f"{task_url(task)}/complete", headers=auth()).json
    after = datetime.now(UTC)
    assert before <= parse(done["completed_at"]) <= after
    assert parse(done["completed_at"]) <= parse(done["updated_at"])
    assert parse(done["updated_at"]) > parse(task["updated_at"])


def test_patch_complete_reopening_clears_completed_at(client, auth, create_task):
    task = create_task(is_completed=True)
    reopened = client.patch(f"{task_url(task)}/complete", headers=auth()).json
    assert reopened["completed_at"] is None
    assert parse(reopened["updated_at"]) > parse(task["updated_at"])
    assert client.get(task_url(task), headers=auth()).json["completed_at"] is None


def test_put_is_completed_sets_then_clears_completed_at(client, auth, create_task):
    task = create_task()
    done = client.put(task_url(task), json={"is_completed": True}, headers=auth()).json
    assert ISO_UTC.fullmatch(done["completed_at"])
    reopened = client.put(task_url(task), json={"is_completed": False}, headers=auth()).json
    assert reopened["completed_at"] is None


def test_repeated_completion_keeps_completed_at_and_updated_at(client, auth, create_task):
    url = f"{task_url(create_task())}/complete"
    first = client.patch(url, json={"is_completed": True}, headers=auth()).json
    again = client.patch(url, json={"is_completed": True}, headers=auth()).json
    assert again["completed_at"] == first["completed_at"]
    assert again["updated_at"] == first["updated_at"]


def test_task_created_completed_is_not_completed_before_it_was_created(create_task):
    task = create_task(is_completed=True)
    assert parse(task["created_at"]) <= parse(task["completed_at"]) <= parse(task["updated_at"])


# --- the UTCDateTime column type -----------------------------------------------------------


def test_utc_datetime_column_refuses_a_naive_datetime_on_write(app):
    with app.app_context():
        db.session.add(
            Task(user_id="alice", title="Naive", created_at=datetime(2026, 1, 17, 9, 30))
        )
        with pytest.raises(StatementError, match="naive datetime") as raised:
            db.session.flush()
        assert isinstance(raised.value.orig, ValueError)
        db.session.rollback()
        assert db.session.scalars(select(Task)).all() == []


def test_utc_datetime_column_refuses_a_naive_datetime_in_a_query(app):
    with app.app_context():
        query = select(Task).where(Task.created_at < datetime(2026, 1, 17, 9, 30))
        with pytest.raises(StatementError, match="naive datetime"):
            db.session.scalars(query).all()
        db.session.rollback()


def store_task_created_at(moment: datetime) -> Task:
    task = Task(user_id="alice", title="Stored directly", created_at=moment)
    db.session.add(task)
    db.session.commit()
    return task


def test_utc_datetime_column_returns_aware_utc_values(app):
    moment = datetime(2026, 1, 17, 15, 0, 0, 123456, tzinfo=INDIA)
    with app.app_context():
        task_id = store_task_created_at(moment).id
        db.session.expire_all()
        loaded = db.session.scalar(select(Task.created_at).where(Task.id == task_id))
    assert loaded == moment
    assert loaded.tzinfo is UTC
    assert loaded == datetime(2026, 1, 17, 9, 30, 0, 123456, tzinfo=UTC)


def test_value_stored_with_an_offset_is_served_in_utc(app, client, auth):
    moment = datetime(2026, 1, 17, 15, 0, 0, 0, tzinfo=INDIA)
    with app.app_context():
        task_id = store_task_created_at(moment).id
    served = client.get(f"/api/alice/tasks/{task_id}", headers=auth()).json
    assert served["created_at"] == "2026-01-17T09:30:00.000000Z"
    assert served["updated_at"] == "2026-01-17T09:30:00.000000Z"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_stores_utc_wall_clock_time(app):
    with app.app_context():
        store_task_created_at(datetime(2026, 1, 17, 15, 0, 0, 123456, tzinfo=INDIA))
        raw = db.session.execute(text("SELECT created_at FROM tasks")).scalar_one()
    assert raw == "2026-01-17 09:30:00.123456"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_session_time_zone_does_not_change_loaded_values(app):
    moment = datetime(2026, 1, 17, 9, 30, 0, 123456, tzinfo=UTC)
    with app.app_context():
        task_id = store_task_created_at(moment).id
        db.session.execute(text("SET LOCAL TIME ZONE 'America/St_Johns'"))
        loaded = db.session.scalar(select(Task.created_at).where(Task.id == task_id))
        db.session.rollback()
    assert loaded == moment
    assert loaded.tzinfo is UTC


@pytest.mark.parametrize("how", ["patch", "put"])
def test_completing_stamps_completed_at_and_updated_at_with_one_moment(
    client, auth, create_task, how
):
    url = f"/api/alice/tasks/{create_task()['id']}"
    if how == "patch":
        done = client.patch(f"{url}/complete", headers=auth()).json
    else:
        done = client.put(url, json={"is_completed": True}, headers=auth()).json
    assert done["completed_at"] == done["updated_at"]
