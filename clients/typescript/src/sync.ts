/**
 * A frontend's own copy of the caller's tasks, kept exact by the change feed
 * (`GET /api/{user_id}/tasks/changes`): see `sync` in `createTaskClient`.
 */
import type { components } from "./schema.js";

type Task = components["schemas"]["TaskResponse"];

/** Where `sync` applies the feed: the frontend's copy of the caller's tasks. */
export interface SyncStore {
  /** A task as it is now: add it, or replace the copy held. */
  upsert(task: Task): void | Promise<void>;
  /** A task deleted on the server: drop the copy held, if there is one. */
  remove(taskId: string): void | Promise<void>;
  /** Drop every task held: the feed starts again from nothing. */
  clear(): void | Promise<void>;
}

/** A `SyncStore` over a `Map` from task id to task, for a copy held in memory. */
export function mapStore(tasks: Map<string, Task>): SyncStore {
  return {
    upsert: (task) => void tasks.set(task.id, task),
    remove: (taskId) => void tasks.delete(taskId),
    clear: () => tasks.clear(),
  };
}
