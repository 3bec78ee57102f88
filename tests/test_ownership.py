"""Ownership: a user reaches their own tasks and nothing else, on every endpoint.

alice owns a task; bob holds a valid token of his own. On alice's path bob is
refused with 403. On his own path alice's task id is a 404 that reads exactly
like a task that never existed. Either way alice's task is left as it was.
"""

import uuid

import pytest

# Also through PgBouncer in transaction pooling, as several hosts reach PostgreSQL (conftest).
pytestmark = pytest.mark.through_pgbouncer

ITEM_ENDPOINTS = [
    ("GET", "", None),
    ("PUT", "", {"title": "Taken over", "is_completed": True, "priority": 5}),
    ("PATCH", "", {"title": "Taken over", "is_completed": True, "priority": 5}),
    ("DELETE", "", None),
    ("PATCH", "/complete", None),
    ("PATCH", "/complete", {"is_completed": True}),
]
ENDPOINTS = [
    ("GET", None, None),
    ("POST", None, {"title": "Planted by bob"}),
    *ITEM_ENDPOINTS,
]


def url(user: str, task_id: str | None = None, suffix: str | None = None) -> str:
    """`/api/{user}/tasks`, or an item path when `suffix` is given ("" or "/complete")."""
    if suffix is None:
        return f"/api/{user}/tasks"
    return f"/api/{user}/tasks/{task_id}{suffix}"


def call(client, method, path, body, headers):
    if body is None:
        return client.open(path, method=method, headers=headers)
    return client.open(path, method=method, json=body, headers=headers)


@pytest.fixture
def alices_task(create_task):
    return create_task("alice", title="Alice's", description="private", priority=2)


@pytest.fixture
def assert_alice_untouched(client, auth, alices_task):
    """Alice still has exactly her one task, unchanged (same body, same ETag)."""
    own = url("alice", alices_task["id"], "")
    etag = client.get(own, headers=auth("alice")).headers["ETag"]

    def check():
        response = client.get(own, headers=auth("alice"))
        assert response.status_code == 200
        assert response.json == alices_task
        assert response.headers["ETag"] == etag
        assert client.get(url("alice"), headers=auth("alice")).json == [alices_task]

    return check


@pytest.mark.parametrize(("method", "suffix", "body"), ENDPOINTS)
def test_other_users_path_is_403(
    client, auth, alices_task, assert_alice_untouched, method, suffix, body
):
    path = url("alice", alices_task["id"], suffix)
    response = call(client, method, path, body, auth("bob"))
    assert response.status_code == 403
    assert response.is_json
    assert set(response.json) == {"detail"}
    assert isinstance(response.json["detail"], str)
    assert alices_task["title"] not in response.get_data(as_text=True)
    assert_alice_untouched()


@pytest.mark.parametrize(("method", "suffix", "body"), ITEM_ENDPOINTS)
@pytest.mark.parametrize("task_id", ["existing", "missing", "not-a-uuid"])
def test_other_users_path_is_the_same_403_whether_or_not_the_task_exists(
    client, auth, alices_task, method, suffix, body, task_id
):
    ids = {"existing": alices_task["id"], "missing": str(uuid.uuid4()), "not-a-uuid": "not-a-uuid"}
    response = call(client, method, url("alice", ids[task_id], suffix), body, auth("bob"))
    list_response = client.get(url("alice"), headers=auth("bob"))
    assert response.status_code == 403
    assert response.json == list_response.json


@pytest.mark.parametrize(("method", "suffix", "body"), ITEM_ENDPOINTS)
def test_other_users_task_on_own_path_is_404_like_a_missing_task(
    client, auth, alices_task, assert_alice_untouched, method, suffix, body
):
    foreign = call(client, method, url("bob", alices_task["id"], suffix), body, auth("bob"))
    missing = call(client, method, url("bob", str(uuid.uuid4()), suffix), body, auth("bob"))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.is_json
    assert isinstance(foreign.json["detail"], str)
    assert foreign.get_data() == missing.get_data()
    assert "ETag" not in foreign.headers
    assert_alice_untouched()
    assert client.get(url("bob"), headers=auth("bob")).json == []


def test_create_on_own_path_makes_a_task_for_yourself_only(client, auth, assert_alice_untouched):
    response = client.post(url("bob"), json={"title": "Bob's"}, headers=auth("bob"))
    assert response.status_code == 201
    assert response.json["user_id"] == "bob"
    assert client.get(url("bob"), headers=auth("bob")).json == [response.json]
    assert_alice_untouched()


def test_lists_show_only_own_tasks(client, auth, create_task):
    alice_first = create_task("alice", title="alice 1")
    bob_only = create_task("bob", title="bob 1")
    alice_second = create_task("alice", title="alice 2")
    alices = client.get(url("alice"), headers=auth("alice")).json
    bobs = client.get(url("bob"), headers=auth("bob")).json
    assert alices == [alice_second, alice_first]
    assert bobs == [bob_only]


@pytest.mark.parametrize("path_user", ["ALICE", "Alice", "alice%20", "%20alice", "alic", "alice2"])
@pytest.mark.parametrize(("method", "body"), [("GET", None), ("POST", {"title": "x"})])
def test_path_user_must_match_the_identity_exactly(
    client, auth, alices_task, path_user, method, body
):
    response = call(client, method, url(path_user), body, auth("alice"))
    assert response.status_code == 403
    assert set(response.json) == {"detail"}
    assert client.get(url("alice"), headers=auth("alice")).json == [alices_task]


def test_token_for_alice_cannot_read_alices_task_on_the_uppercase_path(client, auth, alices_task):
    response = client.get(url("ALICE", alices_task["id"], ""), headers=auth("alice"))
    assert response.status_code == 403
    assert set(response.json) == {"detail"}


def test_token_for_uppercase_alice_is_another_user(client, auth, alices_task):
    assert client.get(url("alice"), headers=auth("ALICE")).status_code == 403
    response = client.get(url("ALICE"), headers=auth("ALICE"))
    assert response.status_code == 200
    assert response.json == []
