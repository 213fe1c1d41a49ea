import type { WebSocketLike } from './types.js';

/** The part of the EventSource API the client uses (browsers', or the npm `eventsource` package's). */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: unknown; lastEventId?: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
  close(): void;
}

/** An EventSource constructor: `new EventSource(url)`. */
export type EventSourceConstructor = new (url: string) => EventSourceLike;

/**
 * sseURL turns the WebSocket endpoint (`ws(s)://host/.../ws`) into the Server-Sent Events one
 * (`http(s)://host/.../sse`) with a `channel` per channel, in order, and the stream's last event
 * id.
 */
export function sseURL(wsURL: string, channels: string[], lastEventID: string): string {
  const u = new URL(wsURL);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  u.pathname = u.pathname.replace(/\/ws$/, '/sse');
  u.searchParams.delete('channel');
  for (const c of channels) u.searchParams.append('channel', c);
  if (lastEventID) u.searchParams.set('last_event_id', lastEventID);
  return u.toString();
}

/**
 * eventID is the event id of a stream of channels at positions (`''`: none yet), the form the
 * server gives (docs/protocol.md, *Event ids*): `1.` then the positions joined by `.`. The client
 * builds it from the positions it keeps, so a resume moves between transports.
 */
export function eventID(positions: string[]): string {
  return positions.some((p) => p !== '') ? `1.${positions.join('.')}` : '';
}

/**
 * SSESocket carries the client's connection over Server-Sent Events (GET /sse): a WebSocketLike,
 * receive-only. The channels are fixed when it opens (the server subscribes them, resuming from
 * the URL's last event id); the client's subscribe frames for them get the server's answers
 * (matched by channel). A subscribe to another channel ends the socket, so that the client
 * reconnects with it in the URL. A ping is answered here; every other frame (publish, send,
 * rpc...) is answered `bad_request`: publishing is the application's backend's job (the HTTP
 * API). Not safe for concurrent use (one event loop).
 */
export class SSESocket implements WebSocketLike {
  readyState = 0;
  onopen: ((ev: any) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null = null;
  onerror: ((ev: any) => void) | null = null;

  private readonly es: EventSourceLike;
  private readonly ids = new Map<string, string>(); // channel -> the id of the client's subscribe
  private ended = false;

  constructor(
    ES: EventSourceConstructor,
    url: string,
    private readonly channels: string[],
  ) {
    this.es = new ES(url);
    this.es.onopen = () => {
      this.readyState = 1;
    };
    this.es.onmessage = (ev) => this.onEvent(ev.data);
    // EventSource would reconnect by itself; the client decides instead (backoff, URL, token).
    this.es.onerror = () => this.finish(1006, 'the event stream ended or failed');
  }

  private onEvent(data: unknown): void {
    if (this.ended || typeof data !== 'string') return;
    this.readyState = 1;
    let f: Record<string, unknown>;
    try {
      f = JSON.parse(data);
    } catch {
      this.onmessage?.({ data });
      return;
    }
    if ((f.type === 'subscribed' || f.type === 'error') && typeof f.id === 'string' && f.id !== '') {
      // The server's subscribe of channel i (id i+1) answers the client's for that channel.
      const ch = f.type === 'subscribed' ? String(f.channel ?? '') : this.channels[Number(f.id) - 1];
      const id = ch !== undefined ? this.ids.get(ch) : undefined;
      if (id === undefined) return; // the client has not asked (yet): it will get its own answer
      this.ids.delete(ch);
      f.id = id;
      this.onmessage?.({ data: JSON.stringify(f) });
      return;
    }
    this.onmessage?.({ data });
  }

  send(data: string): void {
    if (this.ended) throw new Error('the event stream is closed');
    const f = JSON.parse(data) as Record<string, unknown>;
    const id = f.id;
    const answer = (reply: Record<string, unknown>) =>
      queueMicrotask(() => {
        if (!this.ended) this.onmessage?.({ data: JSON.stringify({ ...reply, id }) });
      });
    switch (f.type) {
      case 'subscribe': {
        const ch = String(f.channel ?? '');
        if (!this.channels.includes(ch)) {
          // Not in this stream: reconnect with it.
          queueMicrotask(() => this.finish(1000, `subscribe ${ch}: the event stream reconnects with it`));
          return;
        }
        this.ids.set(ch, String(id));
        return;
      }
      case 'ping':
        answer({ type: 'pong' });
        return;
      case 'unsubscribe':
        answer({ type: 'unsubscribed', channel: f.channel }); // its messages are dropped by the client
        return;
      default:
        answer({
          type: 'error',
          code: 'bad_request',
          message: `${String(f.type)} cannot be sent over Server-Sent Events, which is receive-only: publish through your backend (the HTTP API)`,
        });
    }
  }

  close(): void {
    this.ended = true;
    this.readyState = 3;
    this.es.close();
  }

  private finish(code: number, reason: string): void {
    if (this.ended) return;
    this.close();
    this.onclose?.({ code, reason });
  }
}
