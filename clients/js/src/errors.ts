/**
 * An error of the gateway or of the client.
 *
 * `code` is the code of the server's `error` frame (`bad_request`, `unauthorized`, `forbidden`,
 * `not_found`, `too_large`, `rate_limited`, `unavailable`, `internal`), or one the client sets
 * itself:
 * - `timeout`: no reply within `ackTimeout` (for a publish or send: to the last attempt; for an
 *   rpc or refresh: within its `timeout`);
 * - `closed`: the client was closed (by `close()`, or by a server `disconnect` with
 *   `reconnect: false`) before the call completed;
 * - `unavailable` also when a publish or send lost its connection on every attempt, and when an
 *   rpc or refresh lost its connection before the answer (neither is sent again);
 * - `bad_request` / `too_large` / `not_found` also for calls refused before anything is sent
 *   (data that is not JSON, a frame over `maxFrameSize`, unsubscribing a channel not subscribed).
 */
export class GatewayError extends Error {
  readonly code: string;

  constructor(code: string, message?: string) {
    super(message ? `${code}: ${message}` : code);
    this.name = 'GatewayError';
    this.code = code;
  }
}

/** Error codes of the server's `error` frames (docs/protocol.md section 3). */
export const ErrorCodes = {
  badRequest: 'bad_request',
  unauthorized: 'unauthorized',
  forbidden: 'forbidden',
  notFound: 'not_found',
  tooLarge: 'too_large',
  rateLimited: 'rate_limited',
  unavailable: 'unavailable',
  internal: 'internal',
  /** An extension of this gateway: a subscribe beyond the subscriptions one connection may hold. */
  limitExceeded: 'limit_exceeded',
  /** Set by the client: no reply in time. */
  timeout: 'timeout',
  /** Set by the client: the client closed before the call completed. */
  closed: 'closed',
} as const;

/** Codes of a refusal that may succeed when sent again (after a delay). */
export function retryable(code: string): boolean {
  return code === 'unavailable' || code === 'rate_limited';
}
