/**
 * When a create is sent again. With its `Idempotency-Key` unchanged a retry can never
 * make a second task: the API answers the first 201 again if the first request got
 * through, and creates the task if it did not.
 */

/** fetch rejects with a TypeError when no answer came (connection refused or lost). */
export function isNetworkError(error: unknown): boolean {
  return error instanceof TypeError;
}

/**
 * 409: the first request with this key is still running. 5xx: the API, or a proxy in
 * front of it, failed or could not reach it. Anything else is the same on a retry.
 */
export function isRetryableStatus(status: number): boolean {
  return status === 409 || status >= 500;
}

/** `Retry-After` when the answer has one, otherwise `baseMs` doubled on each attempt. */
export function delayMs(attempt: number, baseMs: number, retryAfter: number | null): number {
  return retryAfter !== null ? retryAfter * 1000 : baseMs * 2 ** attempt;
}

export function wait(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
