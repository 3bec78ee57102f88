// Failures reach the caller as TaskApiError: status, the API's {detail, errors}, Retry-After.
import assert from "node:assert/strict";
import { before, test } from "node:test";

import { TaskApiError, createTaskClient, type TaskClient } from "@taskapp/client";

import {
  TASKAPP_LIMITED_URL,
  TASKAPP_URL,
  clientFor,
  recordingFetch,
  signUp,
  tokenFromTokenEndpoint,
  type User,
} from "./support.js";

let user: User;
let client: TaskClient;

before(async () => {
  user = await signUp();
  client = clientFor(user);
});

/** Check `error` is a TaskApiError with `status`, and hand it to `check` for the rest. */
function apiError(status: number, check: (error: TaskApiError) => void = () => {}) {
  return (error: unknown): true => {
    assert.ok(error instanceof TaskApiError, String(error));
    assert.equal(error.status, status, error.message);
    assert.equal(typeof error.detail, "string");
    check(error);
    return true;
  };
}

test("a body that fails validation is a 422 with messages by field", async () => {
  await assert.rejects(
    client.createTask(user.id, { title: "   ", priority: 9 }),
    apiError(422, (error) => {
      assert.equal(error.detail, "The request failed validation.");
      assert.deepEqual(Object.keys(error.errors).sort(), ["priority", "title"]);
      assert.ok(error.errors["priority"]?.[0]?.includes("1"), String(error.errors["priority"]));
      assert.ok(error.name === "TaskApiError" && error.message.startsWith("422: "));
    }),
  );
});

test("the types refuse what the API refuses: a priority is an integer, not a string", async () => {
  // A frontend that sends "2" does not compile; forced through, the API says why.
  // @ts-expect-error priority is a number
  const body: Parameters<TaskClient["createTask"]>[1] = { title: "Typed", priority: "2" };
  await assert.rejects(
    client.createTask(user.id, body),
    apiError(422, (error) => assert.ok(error.errors["priority"]?.length)),
  );
});

test("a query parameter out of range is a 422 naming it", async () => {
  await assert.rejects(
    client.listTasks(user.id, { limit: 0 }),
    apiError(422, (error) => assert.ok(error.errors["limit"]?.length)),
  );
});

test("another user's path is a 403, another user's task a 404", async () => {
  const other = await signUp();
  const theirs = await clientFor(other).createTask(other.id, { title: "Theirs" });

  await assert.rejects(client.listTasks(other.id), apiError(403));
  await assert.rejects(client.getTask(user.id, theirs.task.id), apiError(404));
  await assert.rejects(client.deleteTask(user.id, theirs.task.id), apiError(404));
});

test("a token the API does not trust is a 401", async () => {
  const untrusted = createTaskClient({ baseUrl: TASKAPP_URL, getToken: () => "not-a-jwt" });
  await assert.rejects(untrusted.listTasks(user.id), apiError(401));
});

test("over the rate limit is a 429 with retryAfter in seconds, and a create is not retried", async () => {
  const limitedUser = await signUp();
  const recorder = recordingFetch();
  const limited = createTaskClient({
    baseUrl: TASKAPP_LIMITED_URL,
    getToken: () => tokenFromTokenEndpoint(limitedUser),
    fetch: recorder.fetch,
    retryDelayMs: 1,
  });
  for (let request = 0; request < 3; request++) await limited.listTasks(limitedUser.id);

  await assert.rejects(
    limited.createTask(limitedUser.id, { title: "Too many" }),
    apiError(429, (error) => {
      assert.ok(error.retryAfter !== null && error.retryAfter > 0, String(error.retryAfter));
      assert.match(error.detail, /Too many requests/);
      assert.ok(error.requestId, "the API's request id, to quote when asking for help");
    }),
  );
  assert.equal(recorder.requests.filter((request) => request.method === "POST").length, 1);
});
