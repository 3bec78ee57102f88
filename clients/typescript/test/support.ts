// What every test file needs: the servers it talks to, users signed up to the real
// Better Auth, and clients that get their tokens from it.
//
// tests/test_typescript_client.py starts a taskapp and a Better Auth and runs these
// tests with their addresses in the environment:
//   TASKAPP_URL          taskapp, trusting that Better Auth's tokens
//   TASKAPP_LIMITED_URL  the same database and keys, with a per-user limit of 3 an hour
//   BETTER_AUTH_URL      tests/betterauth/server.mjs
import assert from "node:assert/strict";

import { createTaskClient, type TaskClient, type TaskClientOptions } from "@taskapp/client";

function setting(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set. These tests need a live taskapp and Better Auth: run them with ` +
        "`make test PYTEST_ARGS=tests/test_typescript_client.py` from the repository's root.",
    );
  }
  return value;
}

export const TASKAPP_URL = setting("TASKAPP_URL");
export const TASKAPP_LIMITED_URL = setting("TASKAPP_LIMITED_URL");
export const BETTER_AUTH_URL = setting("BETTER_AUTH_URL");

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** A Better Auth user: its id (the tokens' `sub`) and its session cookie. */
export interface User {
  id: string;
  cookie: string;
}

export async function signUp(): Promise<User> {
  const response = await fetch(`${BETTER_AUTH_URL}/api/auth/sign-up/email`, {
    method: "POST",
    // Better Auth refuses sign-up from an origin it does not trust.
    headers: { "Content-Type": "application/json", Origin: BETTER_AUTH_URL },
    body: JSON.stringify({
      email: `client-${crypto.randomUUID()}@example.com`,
      password: "correct horse battery staple",
      name: "Client Test",
    }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  const { user } = (await response.json()) as { user: { id: string } };
  const cookie = response.headers
    .getSetCookie()
    .map((setCookie) => setCookie.split(";")[0])
    .join("; ");
  return { id: user.id, cookie };
}

/** A JWT from the JWT plugin's `GET /api/auth/token`, as a server forwarding the session asks. */
export async function tokenFromTokenEndpoint(user: User): Promise<string> {
  const response = await fetch(`${BETTER_AUTH_URL}/api/auth/token`, {
    headers: { Cookie: user.cookie },
  });
  assert.equal(response.status, 200, await response.clone().text());
  return ((await response.json()) as { token: string }).token;
}

/** A JWT from the `set-auth-jwt` header of `GET /api/auth/get-session`. */
export async function tokenFromGetSession(user: User): Promise<string> {
  const response = await fetch(`${BETTER_AUTH_URL}/api/auth/get-session`, {
    headers: { Cookie: user.cookie },
  });
  const token = response.headers.get("set-auth-jwt");
  assert.ok(token, `get-session answered ${response.status} without set-auth-jwt`);
  return token;
}

/** A client for `user`, with tokens from the token endpoint unless `options` say otherwise. */
export function clientFor(user: User, options: Partial<TaskClientOptions> = {}): TaskClient {
  return createTaskClient({
    baseUrl: TASKAPP_URL,
    getToken: () => tokenFromTokenEndpoint(user),
    ...options,
  });
}

/** A fetch that records every request it sends, for tests about what went over the wire. */
export function recordingFetch(): { fetch: typeof fetch; requests: Request[] } {
  const requests: Request[] = [];
  return {
    requests,
    fetch: (input, init) => {
      const request = new Request(input, init);
      requests.push(request.clone());
      return fetch(request);
    },
  };
}
