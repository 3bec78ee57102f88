"""The change feed's guarantee: a client that applies every page in order, from nothing or
from any token it was given, holds exactly the server's tasks, while other requests
write concurrently and commit out of timestamp order. And `updated_since`, a filter,
can miss such a write where the feed does not.

Writes are held open at two moments by a hook (`Holds`), through the real app:
after their flush (their sequence number taken, their rows written, not committed) and
before it (their `updated_at` stamped, nothing written yet). A held write waits until a
syncing reader has finished a whole sync that began after the hold did, so every hold
is a commit that a reader's page has moved past.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest
from flask import has_request_context, request
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from taskapp.extensions import db
from taskapp.models import Task
from taskapp.tasks.schemas import TaskResponseSchema

HOLD_HEADER = "X-Test-Hold"  # "after-flush" or "before-flush"
WAIT_SECONDS = 60  # a deadline for a hook that never sees its reader, not a pace


class Holds:
    """Holds writes that carry HOLD_HEADER open until `released` says they may go on."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.rounds = 0  # whole syncs the reader finished
        self.held = {"before-flush": 0, "after-flush": 0}
        self.waiting = 0
        self.release_on: threading.Event | None = None  # when set, holds wait on it instead
        self.failures: list[str] = []

    def sync_finished(self) -> None:
        with self.condition:
            self.rounds += 1
            self.condition.notify_all()

    def hold(self, moment: str) -> None:
        if not has_request_context() or request.headers.get(HOLD_HEADER) != moment:
            return
        with self.condition:
            self.held[moment] += 1
            self.waiting += 1
            self.condition.notify_all()
            if self.release_on is not None:
                released = self.condition.wait_for(self.release_on.is_set, WAIT_SECONDS)
            else:
                # A sync that began after this hold must finish before the write goes on.
                target = self.rounds + 2
                released = self.condition.wait_for(lambda: self.rounds >= target, WAIT_SECONDS)
            self.waiting -= 1
            if not released:
                self.failures.append(f"a write held {moment} was never released")

    def release(self) -> None:
        assert self.release_on is not None
        with self.condition:
            self.release_on.set()
            self.condition.notify_all()

    def wait_until_held(self, count: int = 1) -> None:
        with self.condition:
            assert self.condition.wait_for(lambda: self.waiting >= count, WAIT_SECONDS)


@pytest.fixture
def holds() -> Iterator[Holds]:
    holds = Holds()

    def before_flush(session, _flush, _instances):
        holds.hold("before-flush")

    def after_flush(session, _flush):
        holds.hold("after-flush")

    # insert=True: before the feed's own before_flush hook numbers the write.
    event.listen(Session, "before_flush", before_flush, insert=True)
    event.listen(Session, "after_flush", after_flush)
    yield holds
    event.remove(Session, "before_flush", before_flush)
    event.remove(Session, "after_flush", after_flush)


class Replica:
    """What a syncing client holds: tasks by id, and the token to continue from."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict] = {}
        self.token: str | None = None

    def sync(self, client, headers) -> None:
        """Apply every page from the token on, in order, until `has_more` is false."""
        while True:
            query = {"limit": 7, **({"since": self.token} if self.token else {})}
            response = client.get("/api/alice/tasks/changes", query_string=query, headers=headers)
            assert response.status_code == 200, response.json
            for change in response.json["changes"]:
                if change["op"] == "upsert":
                    self.tasks[change["task"]["id"]] = change["task"]
                else:
                    self.tasks.pop(change["id"], None)
            self.token = response.json["next"]
            if not response.json["has_more"]:
                return


def server_tasks(app) -> dict[str, dict]:
    with app.app_context():
        tasks = db.session.scalars(select(Task).where(Task.user_id == "alice")).all()
        return {str(task.id): TaskResponseSchema().dump(task) for task in tasks}


WRITERS = 4
WRITES_EACH = 40


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_syncing_client_holds_exactly_the_servers_tasks_under_concurrent_writes(app, auth, holds):
    known: list[str] = []  # ids the writers created, for the others to change
    known_lock = threading.Lock()
    unexpected: list[str] = []
    writers_done = threading.Event()

    def write(seed: int) -> None:
        client, headers = app.test_client(), auth()
        rnd = random.Random(seed)
        for n in range(WRITES_EACH):
            hold = rnd.choice(["after-flush", "before-flush"]) if n % 5 == 4 else None
            extra = {HOLD_HEADER: hold} if hold else {}
            with known_lock:
                target = rnd.choice(known) if known else None
            kind = rnd.choice(["create", "create", "patch", "complete", "delete"])
            if kind == "create" or target is None:
                response = client.post(
                    "/api/alice/tasks",
                    json={"title": f"w{seed}-{n}", "priority": rnd.randint(1, 5)},
                    headers={**headers, **extra, "Idempotency-Key": str(uuid.uuid4())}
                    if rnd.random() < 0.3
                    else {**headers, **extra},
                )
                if response.status_code == 201:
                    with known_lock:
                        known.append(response.json["id"])
            elif kind == "patch":
                body = {"title": f"w{seed}-{n} edited", "description": rnd.choice([None, "d"])}
                response = client.patch(
                    f"/api/alice/tasks/{target}", json=body, headers={**headers, **extra}
                )
            elif kind == "complete":
                response = client.patch(
                    f"/api/alice/tasks/{target}/complete", headers={**headers, **extra}
                )
            else:
                response = client.delete(f"/api/alice/tasks/{target}", headers={**headers, **extra})
            if response.status_code not in (200, 201, 204, 404):
                unexpected.append(f"{kind}: {response.status_code} {response.get_data(True)}")

    replicas = [Replica()]  # the first syncs from nothing before any write
    reader_errors: list[BaseException] = []

    def read() -> None:
        client, headers = app.test_client(), auth()
        try:
            while not writers_done.is_set():
                for replica in replicas:
                    replica.sync(client, headers)
                holds.sync_finished()
                if holds.rounds % 10 == 3 and len(replicas) < 6:
                    replicas.append(Replica())  # another client, from nothing, mid-way
        except BaseException as error:  # reported by the test, not lost in the thread
            reader_errors.append(error)
            holds.sync_finished()

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(seed,)) for seed in range(WRITERS)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    writers_done.set()
    reader.join()

    assert not reader_errors, reader_errors
    assert not unexpected, unexpected
    assert not holds.failures, holds.failures
    # Both kinds of out-of-order commit happened while the reader was syncing.
    assert holds.held["before-flush"] > 0 and holds.held["after-flush"] > 0
    client, headers = app.test_client(), auth()
    expected = server_tasks(app)
    assert len(expected) > 0
    for replica in replicas:
        replica.sync(client, headers)  # the last sync, writers stopped
        assert replica.tasks == expected
    # And one more client starting from nothing now.
    fresh = Replica()
    fresh.sync(client, headers)
    assert fresh.tasks == expected


def test_updated_since_can_miss_a_write_the_feed_does_not(app, client, auth, holds):
    """A create stamps its `updated_at`, then commits after a later-stamped create: a
    client paging by `updated_since` has moved past its timestamp and never sees it."""
    holds.release_on = threading.Event()
    headers = auth()
    start = client.get("/api/alice/tasks/changes", headers=headers).json["next"]
    watermark = "2000-01-01T00:00:00Z"

    slow: dict = {}

    def create_slowly() -> None:
        response = app.test_client().post(
            "/api/alice/tasks",
            json={"title": "Stamped first, committed last"},
            headers={**headers, HOLD_HEADER: "before-flush"},
        )
        slow.update(response.json)

    writer = threading.Thread(target=create_slowly)
    writer.start()
    holds.wait_until_held()  # its updated_at is taken; nothing is written yet
    fast = client.post("/api/alice/tasks", json={"title": "Stamped last"}, headers=headers).json

    # A client syncing by updated_since sees the fast task, and moves its watermark on.
    listed = client.get(
        "/api/alice/tasks",
        query_string={"updated_since": watermark, "sort": "updated_at"},
        headers=headers,
    ).json
    assert [task["id"] for task in listed] == [fast["id"]]
    watermark = listed[-1]["updated_at"]
    # The feed client syncs at the same moment.
    feed = client.get(
        "/api/alice/tasks/changes", query_string={"since": start}, headers=headers
    ).json
    assert [change["task"]["id"] for change in feed["changes"]] == [fast["id"]]

    holds.release()
    writer.join()
    assert datetime.fromisoformat(slow["updated_at"]) < datetime.fromisoformat(watermark)

    missed = client.get(
        "/api/alice/tasks",
        query_string={"updated_since": watermark, "sort": "updated_at"},
        headers=headers,
    ).json
    assert slow["id"] not in [task["id"] for task in missed]  # updated_since missed it
    seen = client.get(
        "/api/alice/tasks/changes", query_string={"since": feed["next"]}, headers=headers
    ).json
    assert [change["task"]["id"] for change in seen["changes"]] == [slow["id"]]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_keyed_create_waits_for_another_write_of_its_user_instead_of_a_409(
    app, client, auth, holds, monkeypatch
):
    """A create with an Idempotency-Key bounds its wait for the key's lock (a 409 when
    the key's first request is still running); waiting its turn on the user's change
    counter, behind a slow write of another task, is no reason for a 409."""
    monkeypatch.setattr("taskapp.tasks.idempotency.IN_FLIGHT_WAIT_MS", 1)
    holds.release_on = threading.Event()
    headers = auth()
    task = client.post("/api/alice/tasks", json={"title": "Slow"}, headers=headers).json
    answers: dict[str, int] = {}

    def send(name: str, method: str, path: str, extra: dict) -> None:
        body = {"title": name}
        response = app.test_client().open(
            path, method=method, json=body, headers={**headers, **extra}
        )
        answers[name] = response.status_code

    slow = threading.Thread(
        target=send,
        args=("slow", "PATCH", f"/api/alice/tasks/{task['id']}", {HOLD_HEADER: "after-flush"}),
    )
    slow.start()
    holds.wait_until_held()  # the counter's row is locked until it commits
    keyed = threading.Thread(
        target=send, args=("keyed", "POST", "/api/alice/tasks", {"Idempotency-Key": "k-1"})
    )
    keyed.start()
    with app.app_context():
        wait_until(lambda: "keyed" in answers or waiting_on_a_lock() > 0)
    holds.release()
    slow.join()
    keyed.join()
    assert answers == {"slow": 200, "keyed": 201}


def waiting_on_a_lock() -> int:
    statement = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with db.engine.connect() as connection:
        return connection.execute(statement).scalar_one()


def wait_until(condition) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)  # the interval between two looks, not a synchronisation
