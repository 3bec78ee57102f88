// Listing through the client: pages cut by `limit`, `Link` followed, counts, filters.
import assert from "node:assert/strict";
import { before, test } from "node:test";

import type { Task, TaskClient } from "@taskapp/client";

import { clientFor, recordingFetch, signUp, type User } from "./support.js";

let user: User;
let client: TaskClient;
let newestFirst: Task[];

before(async () => {
  user = await signUp();
  client = clientFor(user);
  const created: Task[] = [];
  for (const priority of [1, 2, 3, 4, 5]) {
    created.push((await client.createTask(user.id, { title: `Task ${priority}`, priority })).task);
  }
  await client.completeTask(user.id, created[4]!.id, { completed: true });
  newestFirst = (await client.listTasks(user.id)).tasks;
  assert.deepEqual(
    newestFirst.map((task) => task.title),
    ["Task 5", "Task 4", "Task 3", "Task 2", "Task 1"],
  );
});

test("listTasks with a limit answers one page and the cursor of the next", async () => {
  const first = await client.listTasks(user.id, { limit: 2 });
  assert.deepEqual(first.tasks, newestFirst.slice(0, 2));
  assert.equal(typeof first.nextCursor, "string");
  assert.equal(first.totalCount, null); // counting costs: only on request, or when free

  const second = await client.listTasks(user.id, { limit: 2, cursor: first.nextCursor! });
  assert.deepEqual(second.tasks.map((task) => task.id), newestFirst.slice(2, 4).map((task) => task.id));
});

test("allTasks follows Link page after page to the end", async () => {
  const recorder = recordingFetch();
  const recorded = clientFor(user, { fetch: recorder.fetch });

  const seen: Task[] = [];
  for await (const task of recorded.allTasks(user.id, { limit: 2 })) seen.push(task);

  assert.deepEqual(seen.map((task) => task.id), newestFirst.map((task) => task.id));
  const cursors = recorder.requests.map((request) => new URL(request.url).searchParams.get("cursor"));
  assert.equal(cursors.length, 3); // 2 + 2 + 1
  assert.equal(cursors[0], null);
  assert.ok(cursors[1] && cursors[2] && cursors[1] !== cursors[2], String(cursors));
});

test("allTasks keeps the filters and the order on every page", async () => {
  const titles: string[] = [];
  for await (const task of client.allTasks(user.id, {
    priority: [2, 3, 5],
    completed: false,
    sort: "priority",
    limit: 1,
  })) {
    titles.push(task.title);
  }
  assert.deepEqual(titles, ["Task 2", "Task 3"]);
});

test("exactCount sends Prefer: count=exact and every page carries the total", async () => {
  const recorder = recordingFetch();
  const recorded = clientFor(user, { fetch: recorder.fetch });
  const first = await recorded.listTasks(user.id, { limit: 2 }, { exactCount: true });
  const second = await recorded.listTasks(
    user.id,
    { limit: 2, cursor: first.nextCursor! },
    { exactCount: true },
  );
  assert.equal(first.totalCount, 5);
  assert.equal(second.totalCount, 5);
  assert.equal(recorder.requests[0]?.headers.get("Prefer"), "count=exact");
});

test("the first page that holds every match carries its count for free", async () => {
  const page = await client.listTasks(user.id, { completed: true });
  assert.equal(page.tasks.length, 1);
  assert.equal(page.totalCount, 1);
  assert.equal(page.nextCursor, null);
});
