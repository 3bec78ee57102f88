"""The fast reads (taskapp.tasks.json_reads) pinned to the slow ones they replace.

For generated tasks (any Unicode a request may store, nulls, the longest values, every
timestamp precision, the first and last years a timestamp can hold), inserted through
the ORM, the JSON the database writes must equal `TaskResponseSchema().dump()` of the
tasks the ORM loads back, value for value and key for key; and a page must be the page
`page_query` selects, with the same next-page answer and cursor row. Then: the reads run
in AUTOCOMMIT, one statement each, and a read whose pooled connection was closed by the
server is retried once on a fresh connection.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, event, text

from taskapp.extensions import db
from taskapp.models import (
    DESCRIPTION_MAX,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TAG_MAX,
    TAGS_MAX,
    TITLE_MAX,
    Task,
    TaskTag,
    tag_key,
)
from taskapp.tasks import json_reads
from taskapp.tasks.listing import SORTS, ListQuery, encode_cursor, page_query, sort_key
from taskapp.tasks.schemas import TaskResponseSchema
from tests.support import HS_SECRET

# Also through PgBouncer in transaction pooling, as several hosts reach PostgreSQL (conftest).
pytestmark = pytest.mark.through_pgbouncer

SCHEMA = TaskResponseSchema()

# What a request may store: no NUL (PostgreSQL refuses it), no lone surrogate (not UTF-8).
CHARACTERS = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
TRICKY = st.sampled_from(['"', "\\", "\n", "\t", "\x01", "\x1f", "\x7f", "\u2028", "😀", "𝄞"])


def texts(max_size: int) -> st.SearchStrategy[str]:
    """Short text of any characters, often with JSON's special ones, or the longest allowed."""
    short = st.lists(st.one_of(st.text(CHARACTERS, max_size=8), TRICKY), max_size=6).map("".join)
    longest = st.text(CHARACTERS, min_size=1, max_size=4).map(
        lambda piece: (piece * max_size)[:max_size]
    )
    return st.one_of(short.map(lambda value: value[:max_size]), longest)


def moments() -> st.SearchStrategy[datetime]:
    """Any UTC moment a timestamp holds, cut to 0-6 fractional digits."""
    any_moment = st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)
    )
    digits = st.integers(0, 6)
    cut = st.tuples(any_moment, digits).map(
        lambda pair: pair[0].replace(
            microsecond=pair[0].microsecond // 10 ** (6 - pair[1]) * 10 ** (6 - pair[1])
        )
    )
    special = st.sampled_from(
        [
            datetime(1, 1, 1),
            datetime(9999, 12, 31, 23, 59, 59, 999999),
            datetime(2026, 1, 17, 9, 30),
            datetime(2026, 1, 17, 9, 30, 0, 100000),
            datetime(2026, 1, 17, 9, 30, 0, 1),
        ]
    )
    return st.one_of(cut, special).map(lambda moment: moment.replace(tzinfo=UTC))


def tag_lists() -> st.SearchStrategy[list[str]]:
    """What a request may store as tags: none, or up to the most, of any text a tag may
    hold (no control character, trimmed), no two the same ignoring case."""
    tag = st.one_of(
        st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=TAG_MAX),
        st.sampled_from(['"', "\\", "\u2028", "😀", "Straße", "ΐ" * TAG_MAX]),
    ).map(str.strip)
    return st.lists(tag.filter(bool), max_size=TAGS_MAX, unique_by=tag_key)


# Few distinct due dates, so pages end on ties and on the edge of the undated tasks.
DUE_DATES = [datetime(2026, 1, 17, 9, 30, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC)]


@st.composite
def tasks(draw, user_id: str) -> Task:
    return Task(
        user_id=user_id,
        id=draw(st.uuids()),
        title=draw(texts(TITLE_MAX).filter(bool)),
        description=draw(st.one_of(st.none(), texts(DESCRIPTION_MAX))),
        is_completed=draw(st.booleans()),
        priority=draw(st.one_of(st.sampled_from([PRIORITY_MIN, PRIORITY_MAX]), st.integers(1, 5))),
        tags=draw(tag_lists()),
        due_at=draw(st.one_of(st.none(), moments(), st.sampled_from(DUE_DATES))),
        completed_at=draw(st.one_of(st.none(), moments())),
        created_at=draw(moments()),
        updated_at=draw(moments()),
    )


@st.composite
def lists(draw):
    user_id = draw(texts(255).filter(bool))
    return user_id, draw(st.lists(tasks(user_id), max_size=6, unique_by=lambda task: task.id))


PINNED = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def stored(app, user_id, generated):
    """Insert the tasks through the ORM; the caller loads them back (`loaded`)."""
    with app.app_context():
        db.session.execute(delete(TaskTag))
        db.session.execute(delete(Task))
        db.session.add_all(generated)
        db.session.commit()
        db.session.remove()


def assert_same_json(fast_text: bytes, tasks_loaded) -> None:
    fast = json.loads(fast_text)
    slow = SCHEMA.dump(tasks_loaded, many=True)
    assert fast == slow
    assert [list(task) for task in fast] == [list(task) for task in slow]  # key order


@PINNED
@given(data=lists(), sort=st.sampled_from(list(SORTS)), limit=st.integers(1, 5))
@example(data=("alice", []), sort="-created_at", limit=3)
def test_a_page_is_the_schemas_dump_of_the_page_the_orm_selects(app, data, sort, limit):
    user_id, generated = data
    stored(app, user_id, generated)
    query = ListQuery(user_id=user_id, sort=sort, limit=limit)
    with app.app_context():
        page = json_reads.task_page(query, count=True)
        selected = db.session.scalars(page_query(query)).all()
        assert_same_json(page.body, selected[:limit])
        assert page.rows == len(selected[:limit])
        assert page.more == (len(selected) > limit)
        assert page.total == len(generated)
        if page.more:
            last = selected[limit - 1]
            assert (page.last_key, page.last_id) == (sort_key(query, last), last.id)


@PINNED
@given(data=lists(), sort=st.sampled_from(["due_at", "-due_at"]), limit=st.integers(1, 3))
@example(data=("alice", []), sort="due_at", limit=1)
def test_every_page_after_a_cursor_is_the_page_the_orm_selects(app, data, sort, limit):
    # Due dates: the pages cross from the dated tasks to the undated ones, whose cursors
    # carry a null sort key.
    user_id, generated = data
    stored(app, user_id, generated)
    query = ListQuery(user_id=user_id, sort=sort, limit=limit)
    seen = []
    with app.app_context():
        while True:
            page = json_reads.task_page(query)
            selected = db.session.scalars(page_query(query)).all()
            assert_same_json(page.body, selected[:limit])
            seen += [task.id for task in selected[:limit]]
            if not page.more:
                break
            assert page.last_id is not None
            cursor = encode_cursor(query, page.last_key, page.last_id)
            query = ListQuery(user_id=user_id, sort=sort, limit=limit, cursor=cursor)
    assert sorted(seen) == sorted(task.id for task in generated)


@PINNED
@given(data=lists())
def test_one_task_is_the_schemas_dump_of_the_task_the_orm_loads(app, data):
    user_id, generated = data
    stored(app, user_id, generated)
    with app.app_context():
        for task in generated:
            loaded = db.session.get(Task, (user_id, task.id))
            fast = json_reads.task(user_id, task.id)
            assert fast is not None
            assert_same_json(b"[" + fast.body + b"]", [loaded])
            assert fast.version == loaded.version
        assert json_reads.task(user_id, uuid.uuid4()) is None
        assert (
            json_reads.task(user_id + "x", generated[0].id if generated else uuid.uuid4()) is None
        )


# --- one round trip -------------------------------------------------------------


def test_a_list_and_a_task_are_one_statement_each_in_autocommit(
    client, auth, create_task, statements
):
    created = create_task(title="one")
    statements.clear()
    assert client.get("/api/alice/tasks", headers=auth()).status_code == 200
    assert client.get(f"/api/alice/tasks/{created['id']}", headers=auth()).status_code == 200
    assert [autocommit for _, autocommit in statements] == [True, True]


@pytest.mark.parametrize("database_url", ["postgresql", "pgbouncer"], indirect=True)
def test_autocommit_reads_send_no_begin(app, client, auth, create_task):
    """psycopg2 sends BEGIN before a statement unless the connection is in autocommit."""
    create_task()
    with app.app_context():
        engine = db.engine
    seen = []

    def record(connection, *_args):
        seen.append(connection.connection.dbapi_connection.autocommit)

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert client.get("/api/alice/tasks", headers=auth()).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert seen == [True]


# --- a dead pooled connection ---------------------------------------------------


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_read_on_a_connection_the_server_closed_is_retried_once(
    make_app, database_url, auth, postgres_admin
):
    name = f"taskapp-retry-{uuid.uuid4().hex[:8]}"
    separator = "&" if "?" in database_url else "?"
    app = make_app(
        BETTER_AUTH_SECRET=HS_SECRET,
        DATABASE_URL=f"{database_url}{separator}application_name={name}",
    )
    client = app.test_client()
    created = client.post("/api/alice/tasks", json={"title": "kept"}, headers=auth())
    assert created.status_code == 201
    with app.app_context():
        engine = db.engine
    engine.pool._pre_ping = False  # the read itself must notice; whatever the settings say
    disconnects = []
    event.listen(engine, "handle_error", lambda context: disconnects.append(context.is_disconnect))

    for path in ("/api/alice/tasks", f"/api/alice/tasks/{created.json['id']}"):
        killed = postgres_admin(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = :name",
            name=name,
        )
        assert killed >= 1
        response = client.get(path, headers=auth())
        assert response.status_code == 200, response.get_data(as_text=True)
        assert "kept" in response.get_data(as_text=True)
    assert disconnects == [True, True]


@pytest.fixture
def postgres_admin(database_url):
    """Run one statement on a connection of the test's own, outside every app's pool."""
    engine = sqlalchemy.create_engine(
        database_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        poolclass=sqlalchemy.NullPool,
    )

    def run(sql, **parameters):
        with engine.connect() as connection:
            return connection.execute(text(sql), parameters).scalar()

    yield run
    engine.dispose()


def test_one_statement_serves_every_page_size_of_a_shape(app, client, auth):
    # The page size is a parameter, so the statements kept stay a few hundred at most
    # (sorts x filters set) however many sizes clients ask for.
    json_reads._page_statement.cache_clear()
    for limit in range(1, 21):
        assert client.get(f"/api/alice/tasks?limit={limit}", headers=auth()).status_code == 200
    assert json_reads._page_statement.cache_info().currsize == 1


@PINNED
@given(data=lists(), sort=st.sampled_from(list(SORTS)), limit=st.integers(1, 5), pick=st.data())
def test_a_tag_filtered_page_is_the_page_the_orm_selects_and_holds_every_tag(
    app, data, sort, limit, pick
):
    user_id, generated = data
    stored(app, user_id, generated)
    carried = sorted({tag for task in generated for tag in task.tags}) or ["absent"]
    wanted = pick.draw(st.lists(st.sampled_from(carried), min_size=1, max_size=2))
    # As a client may spell them: any case that folds to the same tag (not every one
    # does: the dotless i (U+0131) upper-cases to "I", which folds to "i", another tag).
    asked = [
        pick.draw(
            st.sampled_from(
                [s for s in (tag, tag.upper(), tag.lower()) if tag_key(s) == tag_key(tag)]
            )
        )
        for tag in wanted
    ]
    query = ListQuery(user_id=user_id, sort=sort, limit=limit, tags=asked)
    matching = [
        task
        for task in generated
        if {tag_key(tag) for tag in wanted} <= {tag_key(tag) for tag in task.tags}
    ]
    with app.app_context():
        page = json_reads.task_page(query, count=True)
        selected = db.session.scalars(page_query(query)).all()
        assert_same_json(page.body, selected[:limit])
        assert page.total == len(matching)
        assert {task.id for task in selected} <= {task.id for task in matching}
        assert page.more == (len(selected) > limit)
