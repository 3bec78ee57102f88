// Creates are made at most once: the Idempotency-Key, and retries that keep it.
//
// The faults are injected by the fetch the client is given: the request reaches the
// live API, and its answer is then lost, or replaced by a gateway's 502, as a dropped
// connection or a proxy would do.
import assert from "node:assert/strict";
import { before, test } from "node:test";

import { TaskApiError } from "@taskapp/client";

import { clientFor, signUp, type User } from "./support.js";

let user: User;

before(async () => {
  user = await signUp();
});

/**
 * A fetch that sends every request on, and spoils the answers to the first `spoiled`
 * POSTs with `spoil`; every POST's Idempotency-Key is kept in `keys`.
 */
function faultyFetch(spoiled: number, spoil: () => Response) {
  const keys: (string | null)[] = [];
  const faulty: typeof fetch = async (input, init) => {
    const request = new Request(input, init);
    const response = await fetch(request);
    if (request.method !== "POST") return response;
    keys.push(request.headers.get("Idempotency-Key"));
    if (keys.length > spoiled) return response;
    await response.body?.cancel();
    return spoil();
  };
  return { fetch: faulty, keys };
}

const connectionLost = (): Response => {
  throw new TypeError("fetch failed");
};

async function titles(owner: User): Promise<string[]> {
  return (await clientFor(owner).listTasks(owner.id)).tasks.map((task) => task.title);
}

test("the same key twice answers the first task again, and makes one", async () => {
  const owner = await signUp();
  const ownClient = clientFor(owner);
  const idempotencyKey = crypto.randomUUID();
  const first = await ownClient.createTask(owner.id, { title: "Once" }, { idempotencyKey });
  const again = await ownClient.createTask(owner.id, { title: "Once" }, { idempotencyKey });

  assert.equal(first.replayed, false);
  assert.equal(again.replayed, true);
  assert.deepEqual(again.task, first.task);
  assert.equal(again.idempotencyKey, idempotencyKey);
  assert.deepEqual(await titles(owner), ["Once"]);
});

test("a create whose answer is lost is sent again with its key, and makes one task", async () => {
  const owner = await signUp();
  const faulty = faultyFetch(1, connectionLost);
  const retrying = clientFor(owner, { fetch: faulty.fetch, retryDelayMs: 1 });

  const created = await retrying.createTask(owner.id, { title: "Lost answer" });

  assert.equal(faulty.keys.length, 2);
  assert.deepEqual(faulty.keys, [created.idempotencyKey, created.idempotencyKey]);
  assert.equal(created.replayed, true); // the first request had made it
  assert.deepEqual(await titles(owner), ["Lost answer"]);
});

test("a create answered by a gateway's 5xx is sent again with its key, and makes one task", async () => {
  const owner = await signUp();
  const badGateway = () =>
    Response.json({ detail: "The API is restarting; retry shortly." }, { status: 502 });
  const faulty = faultyFetch(2, badGateway);
  const retrying = clientFor(owner, { fetch: faulty.fetch, retryDelayMs: 1 });

  const created = await retrying.createTask(owner.id, { title: "Behind a proxy" });

  assert.equal(faulty.keys.length, 3);
  assert.equal(new Set(faulty.keys).size, 1);
  assert.equal(created.replayed, true);
  assert.deepEqual(await titles(owner), ["Behind a proxy"]);
});

test("retries stop after createRetries, with the last failure", async () => {
  const owner = await signUp();
  const faulty = faultyFetch(3, connectionLost);
  const retrying = clientFor(owner, { fetch: faulty.fetch, retryDelayMs: 1, createRetries: 1 });

  await assert.rejects(retrying.createTask(owner.id, { title: "Unlucky" }), TypeError);
  assert.equal(faulty.keys.length, 2);
  // The first request made the task: a later retry with the key would answer it.
  assert.deepEqual(await titles(owner), ["Unlucky"]);
});

test("the same key with another body is a 422, not retried", async () => {
  const faulty = faultyFetch(0, connectionLost);
  const recorded = clientFor(user, { fetch: faulty.fetch, retryDelayMs: 1 });
  const idempotencyKey = crypto.randomUUID();
  await recorded.createTask(user.id, { title: "First body" }, { idempotencyKey });

  await assert.rejects(
    recorded.createTask(user.id, { title: "Second body" }, { idempotencyKey }),
    (error) => {
      assert.ok(error instanceof TaskApiError);
      assert.equal(error.status, 422);
      assert.ok(error.errors["Idempotency-Key"]?.length, JSON.stringify(error.errors));
      return true;
    },
  );
  assert.equal(faulty.keys.length, 2);
});

test("a create refused for its content is not retried", async () => {
  const faulty = faultyFetch(0, connectionLost);
  const recorded = clientFor(user, { fetch: faulty.fetch, retryDelayMs: 1 });
  await assert.rejects(recorded.createTask(user.id, { title: "" }), TaskApiError);
  assert.equal(faulty.keys.length, 1);
});

test("a create whose getToken fails is not sent, nor retried", async () => {
  const faulty = faultyFetch(0, connectionLost);
  const signedOut = clientFor(user, {
    fetch: faulty.fetch,
    retryDelayMs: 1,
    getToken: () => {
      throw new TypeError("Cannot read properties of null (reading 'token')");
    },
  });
  await assert.rejects(signedOut.createTask(user.id, { title: "No token" }), {
    message: "getToken failed: no token to send",
  });
  assert.equal(faulty.keys.length, 0);
});
