// Every endpoint through the client, with ETags and If-Match, against a live taskapp.
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";

import { TaskApiError, type TaskClient } from "@taskapp/client";

import {
  UUID,
  clientFor,
  recordingFetch,
  signUp,
  tokenFromGetSession,
  type User,
} from "./support.js";

let user: User;
let client: TaskClient;

before(async () => {
  user = await signUp();
  client = clientFor(user);
});

/** The 412 the API answers an `If-Match` naming an older version. */
function isPreconditionFailed(error: unknown): boolean {
  assert.ok(error instanceof TaskApiError, String(error));
  assert.equal(error.status, 412);
  assert.equal(error.detail, "The resource has changed since you last fetched it.");
  return true;
}

describe("createTask", () => {
  test("answers the new task with its ETag and Location, typed as the API sends them", async () => {
    const created = await client.createTask(user.id, {
      title: "  Buy milk  ",
      description: "2 litres",
      priority: 3,
    });
    const { task } = created;
    assert.match(task.id, UUID);
    assert.equal(task.user_id, user.id);
    assert.equal(task.title, "Buy milk");
    assert.equal(task.description, "2 litres");
    assert.equal(task.priority, 3);
    assert.equal(task.is_completed, false);
    assert.equal(task.completed_at, null);
    assert.match(task.created_at, /Z$/);
    assert.equal(created.etag, '"1"');
    assert.ok(created.location?.endsWith(`/api/${user.id}/tasks/${task.id}`), created.location ?? "");
    assert.equal(created.replayed, false);
  });

  test("sends a fresh Idempotency-Key with every create", async () => {
    const recorder = recordingFetch();
    const recorded = clientFor(user, { fetch: recorder.fetch });
    const first = await recorded.createTask(user.id, { title: "One" });
    const second = await recorded.createTask(user.id, { title: "One" });

    const keys = recorder.requests.map((request) => request.headers.get("Idempotency-Key"));
    assert.deepEqual(keys, [first.idempotencyKey, second.idempotencyKey]);
    assert.match(first.idempotencyKey, UUID);
    assert.notEqual(first.idempotencyKey, second.idempotencyKey);
    assert.notEqual(first.task.id, second.task.id); // two creates, two tasks
  });
});

describe("getTask", () => {
  test("answers the task and its current ETag", async () => {
    const created = await client.createTask(user.id, { title: "Read me" });
    const { task, etag } = await client.getTask(user.id, created.task.id);
    assert.deepEqual(task, created.task);
    assert.equal(etag, created.etag);
  });

  test("of a task that does not exist is a 404", async () => {
    await assert.rejects(client.getTask(user.id, crypto.randomUUID()), (error) => {
      assert.ok(error instanceof TaskApiError);
      assert.equal(error.status, 404);
      return true;
    });
  });
});

describe("replaceTask (PUT)", () => {
  test("with the current ETag changes the fields sent and answers the next ETag", async () => {
    const created = await client.createTask(user.id, { title: "Draft", priority: 2 });
    const replaced = await client.replaceTask(
      user.id,
      created.task.id,
      { title: "Final", description: null },
      { ifMatch: created.etag },
    );
    assert.equal(replaced.task.title, "Final");
    assert.equal(replaced.task.priority, 2); // not sent, not changed
    assert.notEqual(replaced.etag, created.etag);
    assert.equal((await client.getTask(user.id, created.task.id)).etag, replaced.etag);
  });

  test("with a stale ETag is a 412 and changes nothing", async () => {
    const created = await client.createTask(user.id, { title: "Shared" });
    await client.replaceTask(user.id, created.task.id, { title: "Theirs" }, { ifMatch: created.etag });

    await assert.rejects(
      client.replaceTask(user.id, created.task.id, { title: "Mine" }, { ifMatch: created.etag }),
      isPreconditionFailed,
    );
    assert.equal((await client.getTask(user.id, created.task.id)).task.title, "Theirs");
  });
});

describe("updateTask (PATCH)", () => {
  test("sends PATCH with If-Match and changes only the fields sent", async () => {
    const recorder = recordingFetch();
    const recorded = clientFor(user, { fetch: recorder.fetch });
    const created = await recorded.createTask(user.id, { title: "Patch me", priority: 4 });
    const updated = await recorded.updateTask(
      user.id,
      created.task.id,
      { is_completed: true },
      { ifMatch: created.etag },
    );
    const patch = recorder.requests.at(-1);
    assert.equal(patch?.method, "PATCH");
    assert.equal(patch?.headers.get("If-Match"), created.etag);
    assert.equal(updated.task.is_completed, true);
    assert.equal(updated.task.priority, 4);
    assert.notEqual(updated.etag, created.etag);
  });

  test("with a stale ETag is a 412 and changes nothing", async () => {
    const created = await client.createTask(user.id, { title: "Patched twice" });
    await client.updateTask(user.id, created.task.id, { priority: 5 }, { ifMatch: created.etag });

    await assert.rejects(
      client.updateTask(user.id, created.task.id, { priority: 1 }, { ifMatch: created.etag }),
      isPreconditionFailed,
    );
    assert.equal((await client.getTask(user.id, created.task.id)).task.priority, 5);
  });
});

describe("completeTask", () => {
  test("sets is_completed when told, and toggles when not", async () => {
    const created = await client.createTask(user.id, { title: "Do it" });

    const done = await client.completeTask(user.id, created.task.id, { completed: true });
    assert.equal(done.task.is_completed, true);
    assert.notEqual(done.task.completed_at, null);
    const again = await client.completeTask(user.id, created.task.id, { completed: true });
    assert.equal(again.task.is_completed, true); // setting is safe to retry

    const reopened = await client.completeTask(user.id, created.task.id);
    assert.equal(reopened.task.is_completed, false);
    assert.equal(reopened.task.completed_at, null);
  });

  test("with a stale ETag is a 412 and changes nothing", async () => {
    const created = await client.createTask(user.id, { title: "Contested" });
    await client.replaceTask(user.id, created.task.id, { priority: 2 });

    await assert.rejects(
      client.completeTask(user.id, created.task.id, { completed: true, ifMatch: created.etag }),
      isPreconditionFailed,
    );
    assert.equal((await client.getTask(user.id, created.task.id)).task.is_completed, false);
  });
});

describe("deleteTask", () => {
  test("with a stale ETag is a 412 and the task stays", async () => {
    const created = await client.createTask(user.id, { title: "Keep me" });
    await client.completeTask(user.id, created.task.id, { completed: true });

    await assert.rejects(
      client.deleteTask(user.id, created.task.id, { ifMatch: created.etag }),
      isPreconditionFailed,
    );
    assert.equal((await client.getTask(user.id, created.task.id)).task.title, "Keep me");
  });

  test("with the current ETag deletes the task", async () => {
    const created = await client.createTask(user.id, { title: "Delete me" });
    const { etag } = await client.getTask(user.id, created.task.id);

    await client.deleteTask(user.id, created.task.id, { ifMatch: etag });
    await assert.rejects(client.getTask(user.id, created.task.id), (error) => {
      assert.ok(error instanceof TaskApiError);
      assert.equal(error.status, 404);
      return true;
    });
  });
});

describe("listTasks", () => {
  test("answers the user's tasks, newest first, and nobody else's", async () => {
    const owner = await signUp();
    const ownClient = clientFor(owner);
    const other = await signUp();
    await clientFor(other).createTask(other.id, { title: "Not yours" });
    const older = await ownClient.createTask(owner.id, { title: "Older" });
    const newer = await ownClient.createTask(owner.id, { title: "Newer" });

    const page = await ownClient.listTasks(owner.id);
    assert.deepEqual(page.tasks, [newer.task, older.task]);
    assert.equal(page.nextCursor, null);
    assert.equal(page.totalCount, 2);
  });

  test("sorts by due date, undated tasks last, and filters overdue ones", async () => {
    const owner = await signUp();
    const ownClient = clientFor(owner);
    const undated = await ownClient.createTask(owner.id, { title: "Someday" });
    const later = await ownClient.createTask(owner.id, {
      title: "Later",
      due_at: "2020-01-02T10:00:00+01:00",
    });
    const sooner = await ownClient.createTask(owner.id, { title: "Sooner", due_at: "2020-01-01T00:00:00Z" });
    assert.equal(later.task.due_at, "2020-01-02T09:00:00.000000Z");
    assert.equal(undated.task.due_at, null);

    const page = await ownClient.listTasks(owner.id, { sort: "-due_at", limit: 1 });
    assert.deepEqual(page.tasks, [later.task]);
    const rest = await ownClient.listTasks(owner.id, { sort: "-due_at", cursor: page.nextCursor ?? "" });
    assert.deepEqual(rest.tasks, [sooner.task, undated.task]);
    const overdue = await ownClient.listTasks(owner.id, { overdue: true, sort: "due_at" });
    assert.deepEqual(overdue.tasks, [sooner.task, later.task]);
  });
});

describe("getToken", () => {
  test("may hand out the set-auth-jwt header of get-session, the other token source", async () => {
    const sessionClient = clientFor(user, { getToken: () => tokenFromGetSession(user) });
    const created = await sessionClient.createTask(user.id, { title: "Via get-session" });
    assert.equal((await sessionClient.getTask(user.id, created.task.id)).task.title, "Via get-session");
  });

  test("is asked before every request, and its token sent as a bearer token", async () => {
    const recorder = recordingFetch();
    let asked = 0;
    const counted = clientFor(user, {
      fetch: recorder.fetch,
      getToken: async () => {
        asked += 1;
        return tokenFromGetSession(user);
      },
    });
    await counted.listTasks(user.id);
    await counted.listTasks(user.id);
    assert.equal(asked, 2);
    for (const request of recorder.requests) {
      assert.match(request.headers.get("Authorization") ?? "", /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
    }
  });
});

describe("tags", () => {
  test("are sent and answered in order, filter the list ignoring case, and are counted", async () => {
    const tagger = await signUp();
    const tags = clientFor(tagger);
    const { task } = await tags.createTask(tagger.id, { title: "Report", tags: [" Work ", "urgent"] });
    assert.deepEqual(task.tags, ["Work", "urgent"]);
    await tags.createTask(tagger.id, { title: "Call", tags: ["work"] });
    await tags.createTask(tagger.id, { title: "Untagged" });

    const both = await tags.listTasks(tagger.id, { tag: ["WORK", "Urgent"] });
    assert.deepEqual(both.tasks.map((found) => found.title), ["Report"]);
    assert.deepEqual(await tags.listTags(tagger.id), [
      { name: "work", count: 2 },
      { name: "urgent", count: 1 },
    ]);

    const cleared = await tags.updateTask(tagger.id, task.id, { tags: [] });
    assert.deepEqual(cleared.task.tags, []);
    assert.deepEqual(await tags.listTags(tagger.id), [{ name: "work", count: 1 }]);
  });
});
