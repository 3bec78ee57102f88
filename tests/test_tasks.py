"""The seven endpoints: what each returns when things go right, and their statuses."""

import http.client
import uuid
from urllib.parse import urlsplit

import pytest

# Also through PgBouncer in transaction pooling, as several hosts reach PostgreSQL (conftest).
pytestmark = pytest.mark.through_pgbouncer


def test_create_returns_201_with_location_and_the_task(client, auth):
    response = client.post(
        "/api/alice/tasks",
        json={"title": "Buy milk", "description": "2 litres", "priority": 3},
        headers=auth(),
    )
    assert response.status_code == 201
    task = response.json
    assert response.headers["Location"] == f"http://localhost/api/alice/tasks/{task['id']}"
    assert uuid.UUID(task["id"])
    assert task["user_id"] == "alice"
    assert task["title"] == "Buy milk"
    assert task["description"] == "2 litres"
    assert task["priority"] == 3
    assert task["is_completed"] is False
    assert task["completed_at"] is None
    assert task["created_at"] == task["updated_at"]


def test_create_applies_defaults(client, auth):
    task = client.post("/api/alice/tasks", json={"title": "x"}, headers=auth()).json
    assert task["priority"] == 1
    assert task["description"] is None
    assert task["is_completed"] is False


def test_create_completed_task_sets_completed_at(create_task):
    task = create_task(is_completed=True)
    assert task["is_completed"] is True
    assert task["completed_at"] is not None


def test_list_returns_newest_first(client, auth, create_task):
    first, second, third = (create_task(title=t) for t in ("one", "two", "three"))
    response = client.get("/api/alice/tasks", headers=auth())
    assert response.status_code == 200
    assert [t["id"] for t in response.json] == [third["id"], second["id"], first["id"]]


def test_list_of_a_new_user_is_an_empty_array(client, auth):
    response = client.get("/api/nobody-yet/tasks", headers=auth("nobody-yet"))
    assert response.status_code == 200
    assert response.json == []


def test_list_returns_at_most_100_tasks(app, client, auth):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["seed", "alice", "--count", "101"])
    assert result.exit_code == 0, result.output
    assert len(client.get("/api/alice/tasks", headers=auth()).json) == 100


def test_get_returns_the_task_with_an_etag(client, auth, create_task):
    task = create_task()
    response = client.get(f"/api/alice/tasks/{task['id']}", headers=auth())
    assert response.status_code == 200
    assert response.json == task
    assert response.headers["ETag"].startswith('"')


def test_get_with_matching_if_none_match_is_304(client, auth, create_task):
    task = create_task()
    url = f"/api/alice/tasks/{task['id']}"
    etag = client.get(url, headers=auth()).headers["ETag"]
    response = client.get(url, headers={**auth(), "If-None-Match": etag})
    assert response.status_code == 304
    assert response.data == b""


# PATCH is the way to change some fields; PUT, kept for older clients, does the same.
changes = pytest.mark.parametrize("method", ["patch", "put"])


@changes
def test_change_touches_only_the_fields_sent(client, auth, create_task, method):
    task = create_task(title="old", description="keep me", priority=2)
    url = f"/api/alice/tasks/{task['id']}"
    response = client.open(url, method=method, json={"title": "new"}, headers=auth())
    assert response.status_code == 200
    assert response.json["title"] == "new"
    assert response.json["description"] == "keep me"
    assert response.json["priority"] == 2
    assert response.json["updated_at"] > task["updated_at"]
    assert response.json["created_at"] == task["created_at"]
    assert response.headers["ETag"] == client.get(url, headers=auth()).headers["ETag"]


@changes
def test_change_can_clear_the_description(client, auth, create_task, method):
    task = create_task(description="something")
    response = client.open(
        f"/api/alice/tasks/{task['id']}", method=method, json={"description": None}, headers=auth()
    )
    assert response.json["description"] is None


@changes
def test_change_completing_sets_and_reopening_clears_completed_at(
    client, auth, create_task, method
):
    url = f"/api/alice/tasks/{create_task()['id']}"
    done = client.open(url, method=method, json={"is_completed": True}, headers=auth()).json
    assert done["completed_at"] is not None
    reopened = client.open(url, method=method, json={"is_completed": False}, headers=auth()).json
    assert reopened["is_completed"] is False
    assert reopened["completed_at"] is None


@changes
def test_change_persists(client, auth, create_task, method):
    url = f"/api/alice/tasks/{create_task()['id']}"
    client.open(url, method=method, json={"priority": 5}, headers=auth())
    assert client.get(url, headers=auth()).json["priority"] == 5


def test_patch_and_put_answer_the_same(client, auth, create_task):
    body = {"title": "same", "description": None, "is_completed": True, "priority": 4}
    patched = client.patch(f"/api/alice/tasks/{create_task()['id']}", json=body, headers=auth())
    put = client.put(f"/api/alice/tasks/{create_task()['id']}", json=body, headers=auth())
    ignored = {"id", "created_at", "updated_at", "completed_at"}
    assert {k: v for k, v in patched.json.items() if k not in ignored} == {
        k: v for k, v in put.json.items() if k not in ignored
    }
    assert patched.headers["ETag"] == put.headers["ETag"]


def test_delete_returns_204_with_an_empty_body_and_removes_the_task(client, auth, create_task):
    url = f"/api/alice/tasks/{create_task()['id']}"
    response = client.delete(url, headers=auth())
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers
    assert client.get(url, headers=auth()).status_code == 404
    assert client.delete(url, headers=auth()).status_code == 404


def test_delete_over_http_sends_no_content_type_length_or_body(http_server, auth, create_task):
    server = urlsplit(http_server)
    connection = http.client.HTTPConnection(server.hostname, server.port, timeout=10)
    try:
        connection.request("DELETE", f"/api/alice/tasks/{create_task()['id']}", headers=auth())
        response = connection.getresponse()
        assert response.status == 204
        assert response.getheader("Content-Type") is None
        assert response.getheader("Content-Length") is None
        assert response.read() == b""
    finally:
        connection.close()


def test_patch_complete_without_body_toggles(client, auth, create_task):
    url = f"/api/alice/tasks/{create_task()['id']}/complete"
    done = client.patch(url, headers=auth())
    assert done.status_code == 200
    assert done.json["is_completed"] is True
    assert done.json["completed_at"] is not None
    reopened = client.patch(url, headers=auth()).json
    assert reopened["is_completed"] is False
    assert reopened["completed_at"] is None


def test_patch_complete_with_a_body_sets_and_is_idempotent(client, auth, create_task):
    url = f"/api/alice/tasks/{create_task()['id']}/complete"
    first = client.patch(url, json={"is_completed": True}, headers=auth()).json
    again = client.patch(url, json={"is_completed": True}, headers=auth()).json
    assert first["is_completed"] is again["is_completed"] is True
    assert again["completed_at"] == first["completed_at"]
    reopened = client.patch(url, json={"is_completed": False}, headers=auth()).json
    assert reopened["is_completed"] is False


def test_patch_complete_with_an_empty_json_object_is_422_not_a_toggle(client, auth, create_task):
    url = f"/api/alice/tasks/{create_task()['id']}/complete"
    response = client.patch(url, json={}, headers=auth())
    assert response.status_code == 422
    assert response.json["errors"] == {"is_completed": ["Missing data for required field."]}
    assert client.get(url.removesuffix("/complete"), headers=auth()).json["is_completed"] is False


@pytest.mark.parametrize("suffix", ["", "/"])
def test_paths_work_with_and_without_trailing_slash(client, auth, create_task, suffix):
    task = create_task()
    base = f"/api/alice/tasks{suffix}"
    item = f"/api/alice/tasks/{task['id']}{suffix}"
    assert client.get(base, headers=auth()).status_code == 200
    assert client.post(base, json={"title": "t"}, headers=auth()).status_code == 201
    assert client.get(item, headers=auth()).status_code == 200
    assert client.put(item, json={"title": "u"}, headers=auth()).status_code == 200
    assert client.patch(item, json={"title": "v"}, headers=auth()).status_code == 200
    complete = f"/api/alice/tasks/{task['id']}/complete{suffix}"
    assert client.patch(complete, headers=auth()).status_code == 200
    assert client.delete(item, headers=auth()).status_code == 204


def test_unknown_task_is_404(client, auth):
    response = client.get(f"/api/alice/tasks/{uuid.uuid4()}", headers=auth())
    assert response.status_code == 404
    assert response.json == {"detail": "Task not found."}


def test_malformed_task_id_is_422_naming_the_field(client, auth):
    response = client.get("/api/alice/tasks/not-a-uuid", headers=auth())
    assert response.status_code == 422
    assert response.json["errors"] == {"task_id": ["Not a valid UUID."]}
