/**
 * A typed client for taskapp's task API.
 *
 * The types (`./schema.js`) are generated from the committed openapi.json by
 * openapi-typescript and the calls made by openapi-fetch; this module adds what the
 * document cannot say: the Better Auth token on every request, `Link` paging,
 * `ETag`/`If-Match`, an `Idempotency-Key` on every create with safe retries, and errors
 * thrown as `TaskApiError`.
 */
import createClient from "openapi-fetch";

import { toTaskApiError } from "./errors.js";
import { newIdempotencyKey } from "./idempotency.js";
import { nextCursor } from "./links.js";
import { delayMs, isNetworkError, isRetryableStatus, wait } from "./retries.js";
import type { components, paths } from "./schema.js";
import type { SyncStore } from "./sync.js";

export { TaskApiError, type ErrorBody } from "./errors.js";
export { newIdempotencyKey } from "./idempotency.js";
export { nextCursor } from "./links.js";
export type { components, paths } from "./schema.js";
export { mapStore, type SyncStore } from "./sync.js";

const COLLECTION = "/api/{user_id}/tasks";
const ITEM = "/api/{user_id}/tasks/{task_id}";
const COMPLETION = "/api/{user_id}/tasks/{task_id}/complete";
const CHANGES = "/api/{user_id}/tasks/changes";
const TAGS = "/api/{user_id}/tags";

export type Task = components["schemas"]["TaskResponse"];
export type TaskCreate = components["schemas"]["TaskCreate"];
export type TaskUpdate = components["schemas"]["TaskUpdate"];
/** One of the caller's tags and how many tasks carry it. */
export type TagCount = components["schemas"]["TagCount"];
/** The list's query parameters: `limit`, `cursor`, `completed`, `priority`, `q`, ... */
export type TaskQuery = NonNullable<paths[typeof COLLECTION]["get"]["parameters"]["query"]>;

export interface TaskClientOptions {
  /** Where taskapp answers, without `/api`: `https://api.example.com`. */
  baseUrl: string;
  /**
   * The signed-in user's Better Auth JWT, sent as `Authorization: Bearer`. Called
   * before every request, so it should hand out a cached token until it nears expiry.
   */
  getToken: () => string | Promise<string>;
  /** The fetch to use (default: the global one). */
  fetch?: typeof globalThis.fetch | undefined;
  /** How many times a create is sent again after a lost answer, a 409 or a 5xx (default 2). */
  createRetries?: number | undefined;
  /** Wait before the first such retry when the API gives no `Retry-After`, doubled each time (default 500 ms). */
  retryDelayMs?: number | undefined;
}

/** A task and its `ETag`: send the ETag back as `ifMatch` to change it only if unchanged. */
export interface TaskWithEtag {
  task: Task;
  etag: string;
}

export interface CreatedTask extends TaskWithEtag {
  /** The task's URL (`Location`). */
  location: string | null;
  /** The key the create was sent with; retry with it and no second task is made. */
  idempotencyKey: string;
  /** True when the API answered an earlier request with this key (`Idempotent-Replayed`). */
  replayed: boolean;
}

export interface TaskPage {
  tasks: Task[];
  /** The next page's cursor (from `Link`), null on the last page. */
  nextCursor: string | null;
  /** `X-Total-Count`: on a first page that holds every match, or with `exactCount`; else null. */
  totalCount: number | null;
}

export interface ListOptions {
  /** Send `Prefer: count=exact`, so every page carries `totalCount`. */
  exactCount?: boolean | undefined;
}

export interface CreateOptions {
  /** Default: a new random UUID. Pass your own to retry a create across page loads. */
  idempotencyKey?: string | undefined;
}

export interface WriteOptions {
  /** The `ETag` last read: the API answers 412 and changes nothing if the task changed since. */
  ifMatch?: string | undefined;
}

export interface SyncOptions {
  /** The `next` of the last sync; without it (or null) the copy is rebuilt from nothing. */
  since?: string | null | undefined;
  /** Changes per request, 1 to 1000 (default: the API's, 500). */
  limit?: number | undefined;
}

export interface SyncResult {
  /** The token to pass as `since` next time: store it together with the tasks. */
  next: string;
  /** How many changes were applied to the store. */
  applied: number;
  /** True when the API no longer knew `since` (410) and the copy was rebuilt from nothing. */
  restarted: boolean;
}

export interface CompleteOptions extends WriteOptions {
  /** Set `is_completed` to this; leave it out to toggle (a toggle is not safe to retry). */
  completed?: boolean | undefined;
}

export type TaskClient = ReturnType<typeof createTaskClient>;

export function createTaskClient(options: TaskClientOptions) {
  const { getToken, createRetries = 2, retryDelayMs = 500 } = options;
  const api = createClient<paths>({
    baseUrl: options.baseUrl,
    ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
  });
  api.use({
    async onRequest({ request }) {
      let token: string;
      try {
        token = await getToken();
      } catch (cause) {
        // Not fetch's TypeError: a create must not be retried for a missing token.
        throw new Error("getToken failed: no token to send", { cause });
      }
      request.headers.set("Authorization", `Bearer ${token}`);
      return request;
    },
  });

  const item = (userId: string, taskId: string) => ({
    path: { user_id: userId, task_id: taskId },
  });

  /** One page of the caller's tasks, newest first unless `query.sort` says otherwise. */
  async function listTasks(
    userId: string,
    query: TaskQuery = {},
    { exactCount = false }: ListOptions = {},
  ): Promise<TaskPage> {
    const { data, error, response } = await api.GET(COLLECTION, {
      params: { path: { user_id: userId }, query },
      headers: exactCount ? { Prefer: "count=exact" } : {},
    });
    if (data === undefined) throw toTaskApiError(response, error);
    const total = response.headers.get("X-Total-Count");
    return {
      tasks: data,
      nextCursor: nextCursor(response.headers.get("Link")),
      totalCount: total === null ? null : Number(total),
    };
  }

  /** Every task that matches `query`, page after page, following `Link` to the end. */
  async function* allTasks(userId: string, query: TaskQuery = {}): AsyncGenerator<Task, void> {
    let page = await listTasks(userId, query);
    yield* page.tasks;
    while (page.nextCursor !== null) {
      page = await listTasks(userId, { ...query, cursor: page.nextCursor });
      yield* page.tasks;
    }
  }

  async function getTask(userId: string, taskId: string): Promise<TaskWithEtag> {
    return withEtag(await api.GET(ITEM, { params: item(userId, taskId) }));
  }

  /**
   * Create a task. It always carries an `Idempotency-Key`, and when no answer comes, or
   * a 409 or 5xx does, it is sent again with the same key: at most one task is made.
   */
  async function createTask(
    userId: string,
    body: TaskCreate,
    { idempotencyKey = newIdempotencyKey() }: CreateOptions = {},
  ): Promise<CreatedTask> {
    for (let attempt = 0; ; attempt++) {
      const mayRetry = attempt < createRetries;
      let result;
      try {
        result = await api.POST(COLLECTION, {
          params: { path: { user_id: userId } },
          body,
          headers: { "Idempotency-Key": idempotencyKey },
        });
      } catch (error) {
        if (!mayRetry || !isNetworkError(error)) throw error;
        await wait(delayMs(attempt, retryDelayMs, null));
        continue;
      }
      const { response } = result;
      if (response.ok) {
        return {
          ...withEtag(result),
          location: response.headers.get("Location"),
          idempotencyKey,
          replayed: response.headers.get("Idempotent-Replayed") === "true",
        };
      }
      const failure = toTaskApiError(response, result.error);
      if (!mayRetry || !isRetryableStatus(failure.status)) throw failure;
      await wait(delayMs(attempt, retryDelayMs, failure.retryAfter));
    }
  }

  /** `PATCH` or `PUT` the fields in `body`: in this API both leave the others as they are. */
  async function changeTask(
    method: "PATCH" | "PUT",
    userId: string,
    taskId: string,
    body: TaskUpdate,
    { ifMatch }: WriteOptions = {},
  ): Promise<TaskWithEtag> {
    const request = { params: item(userId, taskId), body, headers: { "If-Match": ifMatch } };
    return withEtag(method === "PATCH" ? await api.PATCH(ITEM, request) : await api.PUT(ITEM, request));
  }

  /** `PATCH`: change the fields in `body`, leave the others as they are. */
  const updateTask = (userId: string, taskId: string, body: TaskUpdate, options?: WriteOptions) =>
    changeTask("PATCH", userId, taskId, body, options);

  /** `PUT`: in this API it too changes only the fields in `body`. */
  const replaceTask = (userId: string, taskId: string, body: TaskUpdate, options?: WriteOptions) =>
    changeTask("PUT", userId, taskId, body, options);

  /** Complete or reopen a task: `completed` sets it (safe to retry); without it, toggles. */
  async function completeTask(
    userId: string,
    taskId: string,
    { completed, ifMatch }: CompleteOptions = {},
  ): Promise<TaskWithEtag> {
    return withEtag(
      await api.PATCH(COMPLETION, {
        params: item(userId, taskId),
        body: completed === undefined ? undefined : { is_completed: completed },
        headers: { "If-Match": ifMatch },
      }),
    );
  }

  async function deleteTask(
    userId: string,
    taskId: string,
    { ifMatch }: WriteOptions = {},
  ): Promise<void> {
    const { error, response } = await api.DELETE(ITEM, {
      params: item(userId, taskId),
      headers: { "If-Match": ifMatch },
    });
    if (!response.ok) throw toTaskApiError(response, error);
  }

  /** The caller's tags with how many tasks carry each, most used first. */
  async function listTags(userId: string): Promise<TagCount[]> {
    const { data, error, response } = await api.GET(TAGS, {
      params: { path: { user_id: userId } },
    });
    if (data === undefined) throw toTaskApiError(response, error);
    return data.tags;
  }

  /**
   * Bring `store` up to date with the change feed: every page from `since` on, each
   * change applied in order, until none is left. Without `since` the store is cleared
   * first and filled from nothing; a `since` the API no longer honours (410: older than
   * the deletions it keeps) clears it and starts again from nothing. Afterwards the store
   * holds exactly the server's tasks; pass the result's `next` to the next sync.
   */
  async function sync(
    userId: string,
    store: SyncStore,
    { since = null, limit }: SyncOptions = {},
  ): Promise<SyncResult> {
    let token = since;
    let applied = 0;
    let restarted = false;
    if (token === null) await store.clear();
    for (;;) {
      const { data, error, response } = await api.GET(CHANGES, {
        params: {
          path: { user_id: userId },
          query: { ...(token === null ? {} : { since: token }), ...(limit === undefined ? {} : { limit }) },
        },
      });
      if (response.status === 410 && token !== null && !restarted) {
        await store.clear();
        token = null;
        applied = 0;
        restarted = true;
        continue;
      }
      if (data === undefined) throw toTaskApiError(response, error);
      for (const change of data.changes) {
        if (change.op === "upsert") await store.upsert(change.task);
        else await store.remove(change.id);
        applied++;
      }
      token = data.next;
      if (!data.has_more) return { next: token, applied, restarted };
    }
  }

  return {
    listTasks,
    allTasks,
    getTask,
    createTask,
    updateTask,
    replaceTask,
    completeTask,
    deleteTask,
    listTags,
    sync,
  };
}

/** A single-task answer as the task and its ETag; an error answer thrown as TaskApiError. */
function withEtag(result: { data?: Task; error?: unknown; response: Response }): TaskWithEtag {
  if (result.data === undefined) throw toTaskApiError(result.response, result.error);
  return { task: result.data, etag: etagOf(result.response) };
}

/**
 * Every single-task answer carries an ETag. A missing one means something in between
 * hides it (a proxy, or CORS on an older API): refusing now beats updates that
 * silently stop checking for conflicts.
 */
function etagOf(response: Response): string {
  const etag = response.headers.get("ETag");
  if (etag === null) {
    throw new Error(`${response.url} answered without an ETag: is a proxy or CORS hiding it?`);
  }
  return etag;
}
