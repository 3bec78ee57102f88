import type { components } from "./schema.js";

/** The body of every error answer: one sentence, and messages by field on a 422. */
export type ErrorBody = components["schemas"]["Error"];

/**
 * An answer that is not a success, from any endpoint.
 *
 * `detail` and `errors` are the API's own `{detail, errors}`; `errors` is `{}` when the
 * answer has none, so a form can read `error.errors.title?.[0]` without a check first.
 * `retryAfter` is `Retry-After` in seconds (429, 503), null when absent.
 */
export class TaskApiError extends Error {
  readonly status: number;
  readonly detail: string;
  readonly errors: Readonly<Record<string, readonly string[]>>;
  readonly retryAfter: number | null;
  /** `X-Request-ID`: the id under which the API logged this request. */
  readonly requestId: string | null;

  constructor(
    status: number,
    body: ErrorBody,
    retryAfter: number | null = null,
    requestId: string | null = null,
  ) {
    super(`${status}: ${body.detail}`);
    this.name = "TaskApiError";
    this.status = status;
    this.detail = body.detail;
    this.errors = body.errors ?? {};
    this.retryAfter = retryAfter;
    this.requestId = requestId;
  }
}

/**
 * The error for `response`, whose body openapi-fetch has read as `body`: JSON when it
 * could parse it, the text otherwise. Something in front of the API (a proxy, a CDN)
 * may answer in another shape; its status then speaks for it.
 */
export function toTaskApiError(response: Response, body: unknown): TaskApiError {
  const detail =
    isErrorBody(body) ? body : { detail: `${response.status} ${response.statusText}`.trim() };
  return new TaskApiError(
    response.status,
    detail,
    retryAfterSeconds(response.headers.get("Retry-After")),
    response.headers.get("X-Request-ID"),
  );
}

function isErrorBody(body: unknown): body is ErrorBody {
  return typeof body === "object" && body !== null && typeof (body as ErrorBody).detail === "string";
}

/** `Retry-After` is seconds or an HTTP date (RFC 9110); either becomes seconds from now. */
export function retryAfterSeconds(value: string | null): number | null {
  if (value === null || value.trim() === "") return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}
