"""Tags: on a task (validated, ordered, trimmed), as a list filter, and counted by
`GET /api/<user_id>/tags`.

Tags that differ only in case ("Work", "work", "WORK"; by str.casefold, so "Straße"
and "STRASSE" too) are one tag: a task cannot carry both, the filter matches either,
and the counts add them up.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import timedelta

import pytest
from marshmallow import ValidationError
from sqlalchemy import select

from taskapp.extensions import db
from taskapp.models import TaskTag
from taskapp.tasks.listing import ListQuery
from taskapp.tasks.schemas import TAG_PATTERN, Tag
from tests.support import HS_SECRET
from tests.test_listing import (
    BASE,
    EXACT,
    SORTS,
    assert_read_in_full,
    in_order,
    insert_rows,
    read_all,
    row,
)
from tests.test_rate_limits import ON_SQLITE, assert_too_many_requests
from tests.test_validation import assert_error

# Also through PgBouncer in transaction pooling, as several hosts reach PostgreSQL (conftest).
pytestmark = pytest.mark.through_pgbouncer

TASKS = "/api/alice/tasks"
TAGS = "/api/alice/tags"
TWENTY = [f"tag {n}" for n in range(20)]


def tag_rows(app, user="alice") -> list[tuple[str, str]]:
    """The (key, spelling) rows task_tags holds for `user`."""
    with app.app_context():
        rows = db.session.execute(
            select(TaskTag.tag_key, TaskTag.name).where(TaskTag.user_id == user)
        ).all()
        return sorted(tuple(r) for r in rows)


# --- on a task ------------------------------------------------------------------


def test_a_task_without_tags_has_an_empty_array_everywhere(client, auth, create_task):
    created = create_task()
    assert created["tags"] == []
    assert client.get(f"{TASKS}/{created['id']}", headers=auth()).json["tags"] == []
    assert client.get(TASKS, headers=auth()).json[0]["tags"] == []


def test_tags_are_kept_trimmed_in_the_order_given_on_every_read(client, auth, create_task):
    created = create_task(tags=["  zebra ", "Apple", "\tmango\n", "Ünïcödé 😀"])
    expected = ["zebra", "Apple", "mango", "Ünïcödé 😀"]
    assert created["tags"] == expected
    assert client.get(f"{TASKS}/{created['id']}", headers=auth()).json["tags"] == expected
    assert client.get(TASKS, headers=auth()).json[0]["tags"] == expected


def test_the_most_tags_of_the_longest_length_are_accepted(create_task):
    longest = [f"{n:02d}" + "x" * 48 for n in range(20)]
    assert create_task(tags=longest)["tags"] == longest
    assert create_task(tags=[" " + "y" * 50 + " "])["tags"] == ["y" * 50]


@pytest.mark.parametrize(
    "tags",
    [
        pytest.param([*TWENTY, "one more"], id="21 tags"),
        pytest.param(["x" * 51], id="51 characters"),
        pytest.param(["   "], id="whitespace only"),
        pytest.param([""], id="empty"),
        pytest.param(["a\x07b"], id="a control character"),
        pytest.param(["line\nbreak"], id="a newline inside"),
        pytest.param(["c1\x85control"], id="a C1 control character"),
        pytest.param(["nul\x00"], id="NUL"),
        pytest.param(["Work", "work"], id="equal ignoring case"),
        pytest.param(["Straße", "STRASSE"], id="equal by case folding"),
        pytest.param(["work", " work "], id="equal after trimming"),
        pytest.param(["a", "a"], id="the same one-character tag twice"),
        pytest.param(["same", "same"], id="the same tag twice"),
        pytest.param([1], id="a number"),
        pytest.param([None], id="a null tag"),
        pytest.param([["nested"]], id="an array"),
        pytest.param("work", id="a string, not an array"),
        pytest.param({"work": True}, id="an object"),
        pytest.param(None, id="null"),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_a_bad_tags_value_is_a_422_naming_tags_and_changes_nothing(
    client, auth, create_task, method, tags
):
    task = create_task(tags=["kept"])
    path = TASKS if method == "POST" else f"{TASKS}/{task['id']}"
    response = client.open(path, method=method, json={"title": "x", "tags": tags}, headers=auth())
    assert_error(response, 422, "tags")
    assert client.get(TASKS, headers=auth()).json == [task]


def test_case_duplicates_name_both_spellings(client, auth):
    response = client.post(TASKS, json={"title": "x", "tags": ["Work", "work"]}, headers=auth())
    assert response.json["errors"]["tags"] == ["Tags must differ ignoring case: 'Work' and 'work'."]


def test_null_says_how_to_remove_every_tag(client, auth):
    response = client.post(TASKS, json={"title": "x", "tags": None}, headers=auth())
    assert response.json["errors"]["tags"] == [
        "Must be an array of tags: send [] to remove them all."
    ]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_put_and_patch_replace_the_tags_sent_and_keep_them_when_left_out(
    client, auth, create_task, method
):
    task = create_task(tags=["a", "b"])
    path = f"{TASKS}/{task['id']}"
    response = client.open(path, method=method, json={"title": "renamed"}, headers=auth())
    assert response.json["tags"] == ["a", "b"]  # left out: kept, as every other field
    response = client.open(path, method=method, json={"tags": ["c", "A"]}, headers=auth())
    assert response.status_code == 200
    assert response.json["tags"] == ["c", "A"]
    assert response.json["title"] == "renamed"
    assert response.json["updated_at"] > task["updated_at"]
    assert client.get(path, headers=auth()).json["tags"] == ["c", "A"]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_an_empty_array_removes_every_tag(app, client, auth, create_task, method):
    task = create_task(tags=["a", "b"])
    path = f"{TASKS}/{task['id']}"
    response = client.open(path, method=method, json={"tags": []}, headers=auth())
    assert response.json["tags"] == []
    assert client.get(path, headers=auth()).json["tags"] == []
    assert tag_rows(app) == []
    assert client.get(TAGS, headers=auth()).json == {"tags": []}


def test_a_tags_change_needs_the_current_version_like_any_change(client, auth, create_task):
    task = create_task(tags=["a"])
    path = f"{TASKS}/{task['id']}"
    stale = {**auth(), "If-Match": '"0"'}
    assert client.patch(path, json={"tags": ["b"]}, headers=stale).status_code == 412
    assert client.get(path, headers=auth()).json["tags"] == ["a"]


def test_the_tag_index_follows_every_write_and_the_delete(app, client, auth, create_task):
    task = create_task(tags=["Work", "Straße"])
    assert tag_rows(app) == [("strasse", "Straße"), ("work", "Work")]
    path = f"{TASKS}/{task['id']}"
    client.patch(path, json={"tags": ["WORK", "home"]}, headers=auth())
    assert tag_rows(app) == [("home", "home"), ("work", "WORK")]
    client.patch(path, json={"priority": 3}, headers=auth())  # tags untouched
    assert tag_rows(app) == [("home", "home"), ("work", "WORK")]
    assert client.delete(path, headers=auth()).status_code == 204
    assert tag_rows(app) == []


def test_a_retried_post_with_tags_creates_one_task_and_one_set_of_tags(app, client, auth):
    headers = {**auth(), "Idempotency-Key": "tags-once"}
    body = {"title": "x", "tags": ["a", "B"]}
    first = client.post(TASKS, json=body, headers=headers)
    again = client.post(TASKS, json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json == first.json
    assert tag_rows(app) == [("a", "a"), ("b", "B")]


# --- the list filter ------------------------------------------------------------


@pytest.fixture
def tagged(create_task):
    """Four of alice's tasks and one of bob's, tagged variously."""
    return {
        "both": create_task(title="both", tags=["Work", "urgent"]),
        "work": create_task(title="work", tags=["work"]),
        "urgent": create_task(title="urgent", tags=["URGENT", "home"]),
        "none": create_task(title="none"),
        "bobs": create_task("bob", title="bobs", tags=["work", "urgent"]),
    }


def titles(client, auth, query: str) -> list[str]:
    response = client.get(f"{TASKS}?{query}&sort=title", headers=auth())
    assert response.status_code == 200, response.json
    return [task["title"] for task in response.json]


def test_one_tag_lists_the_tasks_carrying_it_ignoring_case(client, auth, tagged):
    assert titles(client, auth, "tag=work") == ["both", "work"]
    assert titles(client, auth, "tag=WORK") == ["both", "work"]
    assert titles(client, auth, "tag=%20Urgent%20") == ["both", "urgent"]
    assert titles(client, auth, "tag=nothing") == []


def test_two_tags_list_the_tasks_carrying_both(client, auth, tagged):
    assert titles(client, auth, "tag=work&tag=Urgent") == ["both"]
    assert titles(client, auth, "tag=home&tag=urgent") == ["urgent"]
    assert titles(client, auth, "tag=home&tag=work") == []
    assert titles(client, auth, "tag=work&tag=WORK") == ["both", "work"]  # one tag, twice


def test_the_tag_filter_combines_with_the_other_filters_and_counts(client, auth, tagged):
    query = f"{TASKS}?tag=urgent&q=urg&completed=false"
    response = client.get(query, headers=auth())
    assert [task["title"] for task in response.json] == ["urgent"]
    assert response.headers["X-Total-Count"] == "1"
    counted = client.get(f"{TASKS}?tag=work&limit=1", headers={**auth(), **EXACT})
    assert counted.headers["X-Total-Count"] == "2"


@pytest.mark.parametrize(
    "query",
    [
        "tag=",
        "tag=%20%20",
        f"tag={'x' * 51}",
        "tag=a%07b",
        "&".join(f"tag=t{n}" for n in range(21)),
    ],
)
def test_a_bad_tag_parameter_is_a_422_naming_it(client, auth, query):
    response = client.get(f"{TASKS}?{query}", headers=auth())
    assert_error(response, 422, "tag")


def test_the_tags_parameter_is_refused_with_a_hint(client, auth):
    response = client.get(f"{TASKS}?tags=work", headers=auth())
    assert response.status_code == 422
    assert response.json["errors"]["tags"] == [
        "Unknown parameter. Did you mean tag? Repeat it for each tag: tag=work&tag=home."
    ]


@pytest.mark.parametrize("sort", SORTS)
def test_paging_a_tag_filtered_list_sees_each_match_once_in_order(app, client, auth, sort):
    rows = [
        row(title=f"task {n % 7}", priority=n % 5 + 1, created_at=BASE + timedelta(seconds=n // 4))
        for n in range(60)
    ]
    insert_rows(app, rows)
    # Tagged through the API, as clients do: a third "Red", a half "blue", some both.
    for n, task in enumerate(rows):
        tags = (["Red"] if n % 3 == 0 else []) + (["blue"] if n % 2 == 0 else [])
        if tags:
            path = f"{TASKS}/{task['id']}"
            assert client.patch(path, json={"tags": tags}, headers=auth()).status_code == 200
    reds = [task for n, task in enumerate(rows) if n % 3 == 0]
    both = [task for n, task in enumerate(rows) if n % 6 == 0]
    for tasks, tags in ((reds, ["red"]), (both, ["BLUE", "red"])):
        params = [("sort", sort), ("limit", 4), *[("tag", tag) for tag in tags]]
        pages = read_all(client, {**auth(), **EXACT}, params)
        # updated_at moved with the PATCH: ordered by what the API now says.
        current = {t["id"]: t for page in pages for t in page.json}
        expected_rows = [
            {**task, "updated_at": current[str(task["id"])]["updated_at"]} for task in tasks
        ]
        assert_read_in_full(pages, in_order(expected_rows, sort), params, exact=True)


def test_a_cursor_made_for_other_tags_is_a_422(app, client, auth):
    insert_rows(app, [row(title=f"t{n}") for n in range(3)])
    for task in client.get(TASKS, headers=auth()).json:
        client.patch(f"{TASKS}/{task['id']}", json={"tags": ["a", "b"]}, headers=auth())
    first = client.get(f"{TASKS}?tag=a&limit=1", headers=auth())
    cursor = first.headers["Link"].split("cursor=")[1].split(">")[0]
    for other in ("tag=b", "tag=a&tag=b", ""):
        response = client.get(f"{TASKS}?{other}&limit=1&cursor={cursor}", headers=auth())
        assert_error(response, 422, "cursor")
    # The same tags in another case or order are the same filter: the cursor holds.
    for same in ("tag=A", "tag=a&tag=A"):
        response = client.get(f"{TASKS}?{same}&limit=1&cursor={cursor}", headers=auth())
        assert response.status_code == 200, response.json


def test_a_cursor_without_tags_keeps_the_fingerprint_it_had_before_tags():
    """Cursors handed out before tags existed still work after the upgrade."""
    query = ListQuery(user_id="alice", sort="-created_at", completed=True)
    # What the fingerprint was: the digest of [user, sort, completed, priorities, q, since].
    before = json.dumps(["alice", "-created_at", True, [], None, None], separators=(",", ":"))
    assert query.fingerprint() == hashlib.sha256(before.encode()).hexdigest()[:16]


# --- GET /tags ------------------------------------------------------------------


def test_tags_are_counted_most_used_first_then_by_name_ignoring_case(client, auth, create_task):
    create_task(tags=["work", "b-side"])
    create_task(tags=["Work", "Alpha"])
    create_task(tags=["home", "work"])
    create_task(tags=["Home"])
    create_task(tags=["zulu"])
    create_task()
    response = client.get(TAGS, headers=auth())
    assert response.status_code == 200
    assert response.json == {
        "tags": [
            {"name": "work", "count": 3},
            {"name": "Home", "count": 2},
            {"name": "Alpha", "count": 1},
            {"name": "b-side", "count": 1},
            {"name": "zulu", "count": 1},
        ]
    }


def test_a_tag_is_shown_as_the_most_recently_updated_task_spells_it(client, auth, create_task):
    older = create_task(tags=["work"])
    create_task(tags=["WORK"])
    assert client.get(TAGS, headers=auth()).json["tags"] == [{"name": "WORK", "count": 2}]
    client.patch(f"{TASKS}/{older['id']}", json={"tags": ["Work"]}, headers=auth())
    assert client.get(TAGS, headers=auth()).json["tags"] == [{"name": "Work", "count": 2}]


def test_counts_follow_creates_updates_and_deletes(client, auth, create_task):
    first = create_task(tags=["a", "b"])
    second = create_task(tags=["a"])
    counts = lambda: client.get(TAGS, headers=auth()).json["tags"]  # noqa: E731
    assert counts() == [{"name": "a", "count": 2}, {"name": "b", "count": 1}]
    client.patch(f"{TASKS}/{second['id']}", json={"tags": ["b", "c"]}, headers=auth())
    assert counts() == [
        {"name": "b", "count": 2},
        {"name": "a", "count": 1},
        {"name": "c", "count": 1},
    ]
    client.delete(f"{TASKS}/{first['id']}", headers=auth())
    assert counts() == [{"name": "b", "count": 1}, {"name": "c", "count": 1}]
    client.put(f"{TASKS}/{second['id']}", json={"tags": []}, headers=auth())
    assert counts() == []


def test_another_users_tags_are_never_counted_or_shown(client, auth, create_task):
    create_task("bob", tags=["secret", "work"])
    create_task("bob", tags=["work"])
    create_task("alice", tags=["work"])
    assert client.get(TAGS, headers=auth()).json == {"tags": [{"name": "work", "count": 1}]}
    assert client.get(f"{TASKS}?tag=secret", headers=auth()).json == []


def test_another_users_tags_path_is_the_same_403_as_their_tasks(client, auth, create_task):
    create_task("alice", tags=["private"])
    tags = client.get(TAGS, headers=auth("bob"))
    tasks = client.get(TASKS, headers=auth("bob"))
    assert tags.status_code == tasks.status_code == 403
    assert tags.json == tasks.json
    assert "private" not in tags.get_data(as_text=True)


def test_the_tags_path_needs_a_valid_token_like_the_tasks(client, auth):
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        tags = client.get(TAGS, headers=headers)
        tasks = client.get(TASKS, headers=headers)
        assert tags.status_code == tasks.status_code == 401
        assert tags.json == tasks.json


def test_the_tags_path_takes_no_query_parameters(client, auth):
    response = client.get(f"{TAGS}?limit=5", headers=auth())
    assert_error(response, 422, "limit")


@ON_SQLITE
def test_the_tags_path_counts_against_the_users_rate_limit(make_app, auth):
    app = make_app(
        BETTER_AUTH_SECRET=HS_SECRET,
        RATELIMIT_ENABLED="true",
        RATELIMIT_PER_USER="3/minute",
        RATELIMIT_PER_IP="1000/minute",
    )
    client = app.test_client()
    assert client.get(TASKS, headers=auth()).status_code == 200
    for _ in range(2):
        assert client.get(TAGS, headers=auth()).status_code == 200
    response = client.get(TAGS, headers=auth())
    assert_too_many_requests(response, limit=3, window_seconds=60)
    assert_too_many_requests(client.get(TASKS, headers=auth()), limit=3, window_seconds=60)


def test_the_tags_answer_is_documented(client):
    spec = client.get("/openapi.json").json
    operation = spec["paths"]["/api/{user_id}/tags"]["get"]
    assert {"200", "401", "403", "429", "503"} <= set(operation["responses"])
    schemas = spec["components"]["schemas"]
    assert schemas["TagList"]["properties"]["tags"]["items"]["$ref"].endswith("/TagCount")
    task = schemas["TaskResponse"]["properties"]["tags"]
    assert task["type"] == "array"
    tags = schemas["TaskCreate"]["properties"]["tags"]
    assert tags["maxItems"] == 20
    assert tags["items"]["pattern"]


def test_an_unknown_task_id_for_tags_is_not_a_route(client, auth):
    assert client.get(f"{TAGS}/{uuid.uuid4()}", headers=auth()).status_code == 404


@pytest.mark.parametrize(
    "text",
    ["work", " Work ", "\u3000x\x1d", "x" * 50, " " + "x" * 50 + "\t", "a b", "😀", "", "  ",
     "x" * 51, "a\x07b", "a\nb", "\x85", "a\x7f", "nul\x00"],
)  # fmt: skip
def test_the_documented_tag_pattern_is_what_the_server_accepts(text):
    accepted = True
    try:
        Tag().deserialize(text)
    except ValidationError:
        accepted = False
    assert bool(re.match(TAG_PATTERN, text)) == accepted
