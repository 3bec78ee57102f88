// sync(): a copy of the caller's tasks kept exact by the change feed, against a live taskapp.
import assert from "node:assert/strict";
import { before, test } from "node:test";

import { mapStore, type Task, type TaskClient } from "@taskapp/client";

import { clientFor, signUp, type User } from "./support.js";

let user: User;
let client: TaskClient;

before(async () => {
  user = await signUp();
  client = clientFor(user);
});

/** The server's tasks, by id, as the list answers them. */
async function serverTasks(): Promise<Map<string, Task>> {
  const tasks = new Map<string, Task>();
  for await (const task of client.allTasks(user.id)) tasks.set(task.id, task);
  return tasks;
}

test("sync from nothing, then from its token, holds exactly the server's tasks", async () => {
  const created: Task[] = [];
  for (const title of ["One", "Two", "Three", "Four"]) {
    created.push((await client.createTask(user.id, { title, tags: [title] })).task);
  }
  const copy = new Map<string, Task>([["stale", created[0]!]]); // cleared: no token yet
  // limit 3: more changes than a page, so sync asks again while has_more.
  const first = await client.sync(user.id, mapStore(copy), { limit: 3 });
  assert.deepEqual(copy, await serverTasks());
  assert.equal(first.applied, 4);
  assert.equal(first.restarted, false);

  await client.updateTask(user.id, created[0]!.id, { title: "One, renamed" });
  await client.completeTask(user.id, created[1]!.id, { completed: true });
  await client.deleteTask(user.id, created[2]!.id);
  const added = (await client.createTask(user.id, { title: "Five" })).task;
  const second = await client.sync(user.id, mapStore(copy), { since: first.next, limit: 3 });
  assert.deepEqual(copy, await serverTasks());
  assert.equal(second.applied, 4);
  assert.ok(copy.has(added.id) && !copy.has(created[2]!.id));

  const idle = await client.sync(user.id, mapStore(copy), { since: second.next });
  assert.equal(idle.applied, 0);
  assert.deepEqual(copy, await serverTasks());
});

test("a token the server no longer honours (410) restarts the sync from nothing", async () => {
  await client.createTask(user.id, { title: "Kept" });
  // The API answers 410 to a token older than the deletions it keeps; stand in for one
  // that old by answering 410 to the first request that sends `since`.
  const sent: string[] = [];
  const goneOnce: typeof fetch = async (input, init) => {
    const request = new Request(input, init);
    const since = new URL(request.url).searchParams.get("since");
    sent.push(since ?? "(none)");
    if (since === "an-old-token") {
      return new Response(JSON.stringify({ detail: "Sync again from nothing." }), {
        status: 410,
        headers: { "Content-Type": "application/json" },
      });
    }
    return fetch(request);
  };
  const stale = { ...(await client.createTask(user.id, { title: "Stale" })).task, id: "gone" };
  const copy = new Map<string, Task>([["gone", stale]]);
  const result = await clientFor(user, { fetch: goneOnce }).sync(user.id, mapStore(copy), {
    since: "an-old-token",
  });
  assert.equal(result.restarted, true);
  assert.deepEqual(sent, ["an-old-token", "(none)"]);
  assert.deepEqual(copy, await serverTasks()); // the stale copy was dropped
});
