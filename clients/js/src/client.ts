import { GatewayError, retryable } from './errors.js';
import { comparePositions, seen } from './position.js';
import { SSESocket, eventID, sseURL } from './sse.js';
import type { EventSourceConstructor } from './sse.js';
import type {
  Ack,
  CallOptions,
  ClientOptions,
  DirectMessage,
  Disconnect,
  EventMap,
  HistoryPage,
  Member,
  Message,
  PresenceEvent,
  PresencePage,
  PresenceStats,
  State,
  Subscribed,
  Transport,
  Unsubscribed,
  WebSocketConstructor,
  WebSocketLike,
  Welcome,
} from './types.js';

/** Defaults of ClientOptions. */
export const defaults = {
  minReconnectDelay: 250,
  maxReconnectDelay: 10_000,
  ackTimeout: 10_000,
  maxAttempts: 5,
  handshakeTimeout: 10_000,
  pingInterval: 20_000,
  maxFrameSize: 64 << 10,
} as const;

/** How many message ids a subscription remembers to drop repeats. */
const recentIDs = 1024;

/** The largest page history() may ask for (the server's limit). */
export const maxHistoryPage = 1000;

/** The largest page presence() may ask for (the server's limit). */
export const maxPresencePage = 1000;

const channelPattern = /^[A-Za-z0-9_:.\-]{1,128}$/;

const OPEN = 1;

// Any frame from the server.
interface InFrame {
  type: string;
  id?: string;
  channel?: string;
  position?: string;
  recovered?: boolean;
  data?: unknown;
  encoding?: string;
  from?: { user?: string; session?: string };
  to?: string;
  msg_id?: string;
  code?: string;
  message?: string;
  reason?: string;
  reconnect?: boolean;
  session?: string;
  node?: string;
  user?: string;
  // join and leave: one member, or several joined or left in one window (coalesced)
  member?: unknown;
  members?: unknown[];
  // history: the page's frames
  messages?: unknown[];
  // presence and presence_stats
  next?: string;
  connections?: number;
  users?: number;
  // subscribed (the subscription's end) and refreshed (the connection's expiry): unix seconds
  expires?: number;
}

type Timer = ReturnType<typeof setTimeout>;

// The success reply of a request, and how many attempts it took.
interface Reply {
  frame: InFrame;
  attempts: number;
}

// A reply handler: called with the reply, or with null when the connection ended first.
type ReplyHandler = (f: InFrame | null) => void;

// One WebSocket connection (or connection attempt).
class Conn {
  readonly pending = new Map<string, ReplyHandler>();
  welcome?: Welcome;
  disc?: Disconnect;
  ended = false;
  openedAt = 0; // when the welcome frame came
  lastRecv = 0;
  handshakeTimer?: Timer;
  pingTimer?: ReturnType<typeof setInterval>;
  pongTimer?: Timer;

  constructor(
    readonly ws: WebSocketLike,
    readonly url: string,
  ) {}
}

// One subscription, alive across reconnections until unsubscribe or close.
class Sub {
  last: string; // position of the last message delivered (or of the last `subscribed`)
  // The channel's newest messages a subscribe without a position asks for (the rewind option);
  // once it has a position, a resubscription resumes from it instead.
  rewind = 0;
  confirmed = false;
  recovered = false;
  sentOn?: Conn; // the connection the last subscribe frame went on
  readonly recent = new Set<string>();
  // The promise of subscribe(), until the first `subscribed`.
  first?: { resolve: (s: Subscribed) => void; reject: (e: GatewayError) => void; timer?: Timer };

  constructor(
    readonly channel: string,
    since: string,
  ) {
    this.last = since;
  }

  // accept applies a message about to be delivered: false for a duplicate.
  accept(position: string, id: string): boolean {
    if (position) {
      if (this.last && seen(position, this.last)) return false;
      this.last = position;
    }
    if (id) {
      if (this.recent.has(id)) return false;
      this.recent.add(id);
      if (this.recent.size > recentIDs) {
        this.recent.delete(this.recent.values().next().value as string);
      }
    }
    return true;
  }
}

// A publish, send, ping or unsubscribe: sent until a reply (or too many attempts).
class Request {
  attempts = 0;
  done = false;
  current?: { conn: Conn; id: string };
  timer?: Timer; // ack timeout of the current attempt
  retryTimer?: Timer; // delay before the next attempt after `unavailable` / `rate_limited`
  lastCode = 'timeout'; // why the last attempt failed
  lastWhy = '';
  // rpc and refresh: one timeout for the whole call, from the call on, instead of ackTimeout per
  // attempt (0: none)
  total = 0;
  totalTimer?: Timer;

  constructor(
    readonly frame: Record<string, unknown>, // without id
    readonly expect: string, // the type of the success reply
    readonly maxAttempts: number,
    readonly resolve: (reply: Reply) => void,
    readonly reject: (e: GatewayError) => void,
    // unsubscribe: a lost connection or `not_found` means done (the next connection will not
    // subscribe the channel again).
    readonly lossIsSuccess = false,
  ) {}
}

function toNumber(v: number | undefined, def: number, name: string): number {
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw new TypeError(`@wsgateway/client: option ${name} must be a number >= 0, got ${String(v)}`);
  }
  return v;
}

/**
 * normalizeURL turns what the application gave into the URL of the WebSocket endpoint: http(s)
 * becomes ws(s), a relative URL is resolved against the page (in a browser), and `/ws` is
 * appended to a path that does not end with it.
 */
export function normalizeURL(raw: string): string {
  if (typeof raw !== 'string' || raw === '') {
    throw new TypeError('@wsgateway/client: url must be a non-empty string');
  }
  let u: URL;
  try {
    const base = (globalThis as any).location?.href as string | undefined;
    u = base ? new URL(raw, base) : new URL(raw);
  } catch {
    throw new TypeError(`@wsgateway/client: url ${JSON.stringify(raw)} is not a valid URL`);
  }
  switch (u.protocol) {
    case 'http:':
      u.protocol = 'ws:';
      break;
    case 'https:':
      u.protocol = 'wss:';
      break;
    case 'ws:':
    case 'wss:':
      break;
    default:
      throw new TypeError(`@wsgateway/client: url ${JSON.stringify(raw)}: scheme must be ws, wss, http or https`);
  }
  const path = u.pathname.replace(/\/+$/, '');
  u.pathname = path.endsWith('/ws') ? path : path + '/ws';
  u.hash = '';
  return u.toString();
}

function newMsgID(): string {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

const encoder = new TextEncoder();

/** Reports an exception of an application's listener without breaking the client. */
function report(err: unknown): void {
  const g = globalThis as any;
  if (typeof g.reportError === 'function') {
    g.reportError(err);
  } else {
    setTimeout(() => {
      throw err;
    }, 0);
  }
}

/**
 * A connection to the gateway that survives connection losses: it reconnects with jittered
 * backoff, resubscribes every channel from the last position seen, and sends a publish or send
 * again (same msg_id) until it is acked.
 */
export class Client {
  private readonly WS?: WebSocketConstructor;
  private readonly ES?: EventSourceConstructor;
  private readonly transports: Transport[];
  private transportIndex = 0; // the transport of the next attempt
  private lastTransport: Transport;
  private readonly urlOpt: ClientOptions['url'];
  private readonly tokenOpt: ClientOptions['token'];
  // The token of the next connection attempt when tokenOpt is no function or useToken is set (a
  // token refresh() got accepted, used once before the function again).
  private token = '';
  private useToken = false;
  private readonly minDelay: number;
  private readonly maxDelay: number;
  private readonly ackTimeout: number;
  private readonly maxAttempts: number;
  private readonly handshakeTimeout: number;
  private readonly pingInterval: number;
  private readonly maxFrameSize: number;

  private _state: State = 'disconnected';
  private info?: Welcome;
  private conn?: Conn; // the current connection or attempt
  private live = false; // conn got its welcome
  private started = false;
  private closed = false;
  private attempt = 0; // reconnect attempts since the last reset (for the backoff)
  private urlIndex = 0;
  private connectSeq = 0; // invalidates an attempt waiting for its token
  private reconnectTimer?: Timer;
  private frameSeq = 0;
  private readonly subs = new Map<string, Sub>();
  private readonly queue = new Set<Request>(); // requests waiting for a live connection
  private readonly requests = new Set<Request>(); // every request not done
  private readonly listeners = new Map<keyof EventMap, Set<(...args: any[]) => void>>();

  constructor(opts: ClientOptions) {
    if (!opts || typeof opts !== 'object') throw new TypeError('@wsgateway/client: options are required');
    const transports = opts.transports ?? ['websocket'];
    if (!Array.isArray(transports) || transports.length === 0 || transports.some((t) => t !== 'websocket' && t !== 'sse')) {
      throw new TypeError("@wsgateway/client: transports must be a non-empty array of 'websocket' and 'sse'");
    }
    this.transports = [...transports];
    this.lastTransport = this.transports[0];
    const ws = opts.WebSocket ?? (globalThis as any).WebSocket;
    if (transports.includes('websocket') && typeof ws !== 'function') {
      throw new TypeError(
        '@wsgateway/client: no WebSocket: pass the WebSocket option (on Node 20, or run node with --experimental-websocket)',
      );
    }
    this.WS = ws;
    const es = opts.EventSource ?? (globalThis as any).EventSource;
    if (transports.includes('sse') && typeof es !== 'function') {
      throw new TypeError("@wsgateway/client: no EventSource for the 'sse' transport: pass the EventSource option (on Node, the eventsource package)");
    }
    this.ES = es;
    const u = opts.url;
    if (Array.isArray(u)) {
      if (u.length === 0) throw new TypeError('@wsgateway/client: url is an empty array');
      u.forEach((x) => normalizeURL(x));
      this.urlOpt = [...u];
    } else if (typeof u === 'string') {
      normalizeURL(u);
      this.urlOpt = u;
    } else if (typeof u === 'function') {
      this.urlOpt = u;
    } else {
      throw new TypeError('@wsgateway/client: url is required (a string, an array of strings or a function)');
    }
    const t = opts.token;
    if (t !== undefined && typeof t !== 'string' && typeof t !== 'function') {
      throw new TypeError('@wsgateway/client: token must be a string or a function');
    }
    this.tokenOpt = t;
    if (typeof t === 'string') this.token = t;
    this.minDelay = toNumber(opts.minReconnectDelay, defaults.minReconnectDelay, 'minReconnectDelay');
    this.maxDelay = Math.max(this.minDelay, toNumber(opts.maxReconnectDelay, defaults.maxReconnectDelay, 'maxReconnectDelay'));
    this.ackTimeout = toNumber(opts.ackTimeout, defaults.ackTimeout, 'ackTimeout');
    this.maxAttempts = Math.max(1, Math.floor(toNumber(opts.maxAttempts, defaults.maxAttempts, 'maxAttempts')));
    this.handshakeTimeout = toNumber(opts.handshakeTimeout, defaults.handshakeTimeout, 'handshakeTimeout');
    this.pingInterval = toNumber(opts.pingInterval, defaults.pingInterval, 'pingInterval');
    this.maxFrameSize = toNumber(opts.maxFrameSize, defaults.maxFrameSize, 'maxFrameSize');
  }

  /** The connection state. */
  get state(): State {
    return this._state;
  }
  /** The session id of the current (or last) connection. */
  get session(): string | undefined {
    return this.info?.session;
  }
  /** The transport of the current (or last) connection attempt. */
  get transport(): Transport {
    return this.lastTransport;
  }
  /** The id of the node of the current (or last) connection. */
  get node(): string | undefined {
    return this.info?.node;
  }
  /** The user id the server gave the connection (the token's `sub`; '' when anonymous). */
  get user(): string | undefined {
    return this.info?.user;
  }

  /** What the server's connect hook gave the client in the welcome of the current (or last) connection; undefined without one. */
  get welcomeData(): unknown {
    return this.info?.data;
  }

  /** Starts connecting, and keeps reconnecting until close(). Calling it again does nothing. */
  connect(): void {
    if (this.closed || this.started) return;
    this.started = true;
    void this.open();
  }

  /**
   * Closes the connection for good: every pending promise rejects with code `closed`, and so does
   * every later call. Calling it again does nothing.
   */
  close(): void {
    this.shutdown(new GatewayError('closed', 'client closed'));
  }

  /**
   * Subscribes to channel (`$user` for the user's own channel) and resolves once the server
   * confirmed it. The subscription is renewed on every reconnection, resuming after the last
   * message seen. `since` resumes from a position kept by the application; `rewind: N` (without
   * `since`) first delivers the channel's newest N messages (at most the server's
   * `history.max_replay`), then the live ones, with no gap and no duplicate. Rejects with the
   * server's error (`forbidden`, ...), `bad_request` when already subscribed, `timeout` when
   * the server did not answer in ackTimeout. While disconnected it waits for the connection.
   */
  subscribe(channel: string, opts: { since?: string; rewind?: number } = {}): Promise<Subscribed> {
    if (this.closed) return Promise.reject(new GatewayError('closed', 'client closed'));
    if (typeof channel !== 'string' || (channel !== '$user' && !channelPattern.test(channel))) {
      return Promise.reject(
        new GatewayError('bad_request', `invalid channel ${JSON.stringify(channel)}: must match ${channelPattern} or be $user`),
      );
    }
    const since = opts?.since ?? '';
    if (typeof since !== 'string') return Promise.reject(new GatewayError('bad_request', 'since must be a string'));
    if (this.subs.has(channel)) {
      return Promise.reject(new GatewayError('bad_request', `already subscribed to ${channel}`));
    }
    const rewind = opts?.rewind ?? 0;
    if (!Number.isInteger(rewind) || rewind < 0) {
      return Promise.reject(new GatewayError('bad_request', 'rewind must be a non-negative integer'));
    }
    const sub = new Sub(channel, since);
    sub.rewind = rewind;
    this.subs.set(channel, sub);
    const p = new Promise<Subscribed>((resolve, reject) => {
      sub.first = { resolve, reject };
    });
    if (this.live && this.conn) this.sendSubscribe(this.conn, sub);
    return p;
  }

  /**
   * Ends the subscription to channel: no more `message` events for it, and the server is told
   * (when connected). Rejects with `not_found` when not subscribed. A subscribe() still waiting
   * for its confirmation rejects with `closed`.
   */
  unsubscribe(channel: string): Promise<void> {
    if (this.closed) return Promise.reject(new GatewayError('closed', 'client closed'));
    const sub = this.subs.get(channel);
    if (!sub) return Promise.reject(new GatewayError('not_found', `not subscribed to ${channel}`));
    this.subs.delete(channel);
    this.settleFirst(sub, new GatewayError('closed', `unsubscribed from ${channel}`));
    if (!this.live || !this.conn || sub.sentOn !== this.conn) return Promise.resolve();
    return this.request({ type: 'unsubscribe', channel }, 'unsubscribed', 1, true).then(() => undefined);
  }

  /**
   * Publishes data (any JSON value) on channel and resolves once the server acked it. Without
   * opts.msgId the client makes one; every attempt carries the same msg_id, so the server
   * delivers the message once however often it is sent. It is sent again after a lost
   * connection, a missing ack (ackTimeout) or an `unavailable` / `rate_limited` refusal, up to
   * maxAttempts times; other refusals (`forbidden`, ...) reject at once.
   */
  publish(channel: string, data: unknown, opts: { msgId?: string } = {}): Promise<Ack> {
    if (typeof channel !== 'string' || channel === '') {
      return Promise.reject(new GatewayError('bad_request', 'channel must be a non-empty string'));
    }
    return this.submit({ type: 'publish', channel }, data, opts?.msgId);
  }

  /** Sends data to the services (never to clients) and resolves once acked; retried like publish. */
  send(data: unknown, opts: { msgId?: string } = {}): Promise<Ack> {
    return this.submit({ type: 'send' }, data, opts?.msgId);
  }

  /** Sends a `ping` and resolves on its `pong`. */
  ping(): Promise<void> {
    return this.request({ type: 'ping' }, 'pong', this.maxAttempts).then(() => undefined);
  }

  /**
   * Reads a page of the members of channel, a presence channel (the server's `presence.channels`)
   * the client may subscribe to; it need not be subscribed. The first page is without `after`;
   * the next one with `after` = the page's `next`, until `next` is absent. `limit`: 1 to 1000
   * (the server's default page is 100). Rejects with the server's error: `forbidden`,
   * `bad_request` (not a presence channel), `unavailable` (a broker that keeps no presence, or that
   * did not answer: sent again like a ping, up to maxAttempts). Waits for the connection while
   * disconnected.
   */
  presence(channel: string, opts: { after?: string; limit?: number } = {}): Promise<PresencePage> {
    const bad = presenceChannelError(channel);
    if (bad) return Promise.reject(bad);
    const frame: Record<string, unknown> = { type: 'presence', channel };
    const after = opts?.after;
    if (after !== undefined && after !== '') {
      if (typeof after !== 'string') return Promise.reject(new GatewayError('bad_request', 'after must be a string'));
      frame.after = after;
    }
    const limit = opts?.limit;
    if (limit !== undefined) {
      if (!Number.isInteger(limit) || limit < 1 || limit > maxPresencePage) {
        return Promise.reject(new GatewayError('bad_request', `limit must be an integer from 1 to ${maxPresencePage}`));
      }
      frame.limit = limit;
    }
    return this.request(frame, 'presence', this.maxAttempts).then((r) => {
      const f = r.frame;
      const page: PresencePage = { channel, members: [] };
      if (Array.isArray(f.members)) {
        page.members = f.members.map(toMember).filter((m): m is Member => m !== undefined);
      } else if (typeof f.connections === 'number') {
        page.stats = { connections: f.connections, users: Number(f.users ?? 0) };
      }
      if (typeof f.next === 'string' && f.next !== '') page.next = f.next;
      return page;
    });
  }

  /**
   * Reads every member of channel, page after page (see presence()). Members that join or leave
   * meanwhile may or may not be in it. When the server answers with the counts only (more
   * members than `presence.max_members`), `members` is empty and `stats` holds the counts.
   */
  async presenceAll(channel: string): Promise<{ members: Member[]; stats?: PresenceStats }> {
    const members: Member[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await this.presence(channel, { after, limit: maxPresencePage });
      if (page.stats) return { members: [], stats: page.stats };
      members.push(...page.members);
      if (!page.next) return { members };
      after = page.next;
    }
  }

  /** Reads the number of members (connections) of channel and of distinct users among them; errors as presence(). */
  presenceStats(channel: string): Promise<PresenceStats> {
    const bad = presenceChannelError(channel);
    if (bad) return Promise.reject(bad);
    return this.request({ type: 'presence_stats', channel }, 'presence_stats', this.maxAttempts).then((r) => {
      const f = r.frame;
      if (typeof f.connections !== 'number') {
        throw new GatewayError('internal', 'presence_stats answered without counts');
      }
      return { connections: f.connections, users: Number(f.users ?? 0) };
    });
  }

  /**
   * Calls method on the application's backend through the server's rpc hook and resolves with the
   * data of its `rpc_result` (undefined when it has none). data is any JSON value (undefined: none
   * sent). Rejects with the backend's own code (`not_member`, ...) or the gateway's
   * (`unavailable` when the backend did not answer in time, `not_found`, `rate_limited`,
   * `bad_request`, ...); with `timeout` when no answer came within opts.timeout (default
   * ackTimeout, counted from the call, the wait for a connection included); with `unavailable`
   * when the connection was lost before the answer. An rpc is sent once, never again: after
   * `timeout` or a lost connection the method may or may not have run.
   */
  rpc(method: string, data?: unknown, opts: CallOptions = {}): Promise<unknown> {
    if (this.closed) return Promise.reject(new GatewayError('closed', 'client closed'));
    if (typeof method !== 'string' || method === '' || method.length > 128) {
      return Promise.reject(new GatewayError('bad_request', 'method must be a string of 1 to 128 characters'));
    }
    const timeout = callTimeout(opts, this.ackTimeout);
    if (timeout instanceof GatewayError) return Promise.reject(timeout);
    const f: Record<string, unknown> = { type: 'rpc', method };
    if (data !== undefined) {
      const bad = encodeData(f, data);
      if (bad) return Promise.reject(bad);
    }
    const big = this.tooLarge(f);
    if (big) return Promise.reject(big);
    return this.request(f, 'rpc_result', 1, false, timeout).then((r) => r.frame.data);
  }

  /**
   * Extends the connection without reconnecting: sends token (a new token of the same user,
   * checked as at the upgrade) or, without one, asks the server's refresh hook to decide.
   * Resolves with the connection's new expiry (unix seconds; 0: none). Rejects like rpc():
   * `unauthorized` for a bad token, the hook's own code, `timeout`, `unavailable`. A token the
   * server accepted is kept for the reconnections (see the `token` option).
   */
  refresh(token?: string, opts: CallOptions = {}): Promise<number> {
    if (this.closed) return Promise.reject(new GatewayError('closed', 'client closed'));
    if (token !== undefined && typeof token !== 'string') {
      return Promise.reject(new GatewayError('bad_request', 'token must be a string'));
    }
    const timeout = callTimeout(opts, this.ackTimeout);
    if (timeout instanceof GatewayError) return Promise.reject(timeout);
    const f: Record<string, unknown> = { type: 'refresh' };
    if (token) f.token = token;
    return this.request(f, 'refreshed', 1, false, timeout).then((r) => {
      if (token) {
        this.token = token;
        this.useToken = typeof this.tokenOpt === 'function';
      }
      return Number(r.frame.expires ?? 0);
    });
  }

  /**
   * Reads a page of channel's history, for a channel the client may subscribe to; it need not be
   * subscribed. Without `since`: the channel's newest messages; with it, those after it. Oldest
   * first, or, with `reverse`, newest first and before `since`. `next`, when present, is the
   * `since` of the next page. `limit`: 1 to 1000 (the server's default page is 100, and its
   * `history.max_replay` caps it). Joins and leaves of the channel's stream come in `presence`.
   * Rejects with the server's error: `forbidden`, `not_found` (the history no longer reaches
   * `since`), `unavailable` (a broker that keeps no history).
   */
  history(channel: string, opts: { since?: string; limit?: number; reverse?: boolean } = {}): Promise<HistoryPage> {
    if (typeof channel !== 'string' || (channel !== '$user' && !channelPattern.test(channel))) {
      return Promise.reject(
        new GatewayError('bad_request', `invalid channel ${JSON.stringify(channel)}: must match ${channelPattern} or be $user`),
      );
    }
    const frame: Record<string, unknown> = { type: 'history', channel };
    const since = opts?.since;
    if (since !== undefined && since !== '') {
      if (typeof since !== 'string') return Promise.reject(new GatewayError('bad_request', 'since must be a string'));
      frame.since = since;
    }
    const limit = opts?.limit;
    if (limit !== undefined) {
      if (!Number.isInteger(limit) || limit < 1 || limit > maxHistoryPage) {
        return Promise.reject(new GatewayError('bad_request', `limit must be an integer from 1 to ${maxHistoryPage}`));
      }
      frame.limit = limit;
    }
    if (opts?.reverse) frame.reverse = true;
    return this.request(frame, 'history', this.maxAttempts).then((r) => {
      const f = r.frame;
      const page: HistoryPage = { channel, messages: [], presence: [] };
      for (const raw of Array.isArray(f.messages) ? (f.messages as InFrame[]) : []) {
        if (raw.type === 'join' || raw.type === 'leave') {
          const list = Array.isArray(raw.members) ? raw.members : raw.member !== undefined ? [raw.member] : [];
          for (const member of list.map(toMember)) {
            if (member) page.presence.push({ channel, kind: raw.type, member, position: String(raw.position ?? '') });
          }
          continue;
        }
        const m: Message = { channel, id: String(raw.id ?? ''), position: String(raw.position ?? ''), data: raw.data };
        if (raw.from) {
          m.from = String(raw.from.user ?? '');
          m.fromSession = String(raw.from.session ?? '');
        }
        if (raw.encoding === 'base64') m.encoding = 'base64';
        page.messages.push(m);
      }
      if (typeof f.next === 'string' && f.next !== '') page.next = f.next;
      return page;
    });
  }

  /** The position of the last message seen on channel (or of its subscription): what a resume starts after. */
  position(channel: string): string | undefined {
    return this.subs.get(channel)?.last || undefined;
  }

  /** Adds a listener; returns the function that removes it. */
  on<K extends keyof EventMap>(ev: K, f: EventMap[K]): () => void {
    if (typeof f !== 'function') throw new TypeError('@wsgateway/client: listener must be a function');
    let set = this.listeners.get(ev);
    if (!set) this.listeners.set(ev, (set = new Set()));
    const fn = f as (...args: any[]) => void;
    set.add(fn);
    return () => {
      set.delete(fn);
    };
  }

  // ---- events ------------------------------------------------------------------------------

  private emit<K extends keyof EventMap>(ev: K, ...args: Parameters<EventMap[K]>): void {
    const set = this.listeners.get(ev);
    if (!set) return;
    for (const f of [...set]) {
      try {
        f(...args);
      } catch (err) {
        report(err);
      }
    }
  }

  private setState(s: State): void {
    const prev = this._state;
    if (prev === s) return;
    this._state = s;
    this.emit('state', s, prev);
  }

  // ---- connections -------------------------------------------------------------------------

  private nextURL(): string {
    const u = this.urlOpt;
    if (typeof u === 'function') return normalizeURL(u());
    if (Array.isArray(u)) return normalizeURL(u[this.urlIndex++ % u.length]);
    return normalizeURL(u);
  }

  // open makes one connection attempt.
  private async open(): Promise<void> {
    this.reconnectTimer = undefined;
    if (this.closed) return;
    this.setState('connecting');
    const seq = ++this.connectSeq;
    let url: string;
    try {
      url = this.nextURL();
    } catch (err) {
      this.emit('error', new GatewayError('bad_request', `cannot connect: ${errText(err)}`));
      this.attemptFailed({ code: 'connect_failed', reason: errText(err), reconnect: true });
      return;
    }
    let token = this.token;
    const useToken = this.useToken;
    this.useToken = false;
    try {
      if (typeof this.tokenOpt === 'function' && !useToken) {
        token = await this.tokenOpt();
        if (this.closed || seq !== this.connectSeq) return;
        if (typeof token !== 'string') throw new TypeError(`the token function returned ${typeof token}, not a string`);
      }
    } catch (err) {
      if (this.closed || seq !== this.connectSeq) return;
      this.emit('error', new GatewayError('unauthorized', `cannot connect: the token function failed: ${errText(err)}`));
      this.attemptFailed({ code: 'connect_failed', reason: errText(err), reconnect: true });
      return;
    }
    const transport = this.transports[this.transportIndex % this.transports.length];
    this.lastTransport = transport;
    let full = url;
    let channels: string[] = [];
    if (transport === 'sse') {
      // The stream's channels, resuming each from its last position (the event id's form).
      const subs = [...this.subs.values()];
      channels = subs.map((s) => s.channel);
      full = sseURL(url, channels, eventID(subs.map((s) => s.last)));
    }
    if (token) {
      const u = new URL(full);
      u.searchParams.set('token', token);
      full = u.toString();
    }
    let ws: WebSocketLike;
    try {
      ws = transport === 'sse' ? new SSESocket(this.ES as EventSourceConstructor, full, channels) : new (this.WS as WebSocketConstructor)(full);
    } catch (err) {
      this.transportIndex++;
      this.attemptFailed({ code: 'connect_failed', reason: `${url}: ${errText(err)}`, reconnect: true });
      return;
    }
    const conn = new Conn(ws, url);
    this.conn = conn;
    this.live = false;
    conn.handshakeTimer = setTimeout(
      () => this.end(conn, `no welcome from ${url} within ${this.handshakeTimeout} ms`),
      this.handshakeTimeout,
    );
    ws.onmessage = (ev) => this.onData(conn, ev.data);
    ws.onclose = (ev) => this.end(conn, closeText(url, ev));
    ws.onerror = () => this.end(conn, `${url}: connection failed or broke`);
  }

  // attemptFailed schedules the next attempt after one that failed before its socket existed.
  private attemptFailed(d: Disconnect): void {
    this.emit('disconnect', d);
    if (this.closed) return;
    this.schedule(this.backoff(this.attempt++));
  }

  private schedule(delay: number): void {
    if (this.closed || this.reconnectTimer !== undefined) return;
    this.reconnectTimer = setTimeout(() => void this.open(), delay);
  }

  // backoff is the delay before attempt n: random in [0, min(max, min*2^n)).
  private backoff(n: number): number {
    const d = Math.min(this.maxDelay, this.minDelay * 2 ** Math.min(n, 30));
    return Math.random() * d;
  }

  private onData(conn: Conn, raw: unknown): void {
    if (conn.ended || conn !== this.conn) return;
    conn.lastRecv = Date.now();
    let text: string;
    if (typeof raw === 'string') text = raw;
    else if (raw instanceof ArrayBuffer || ArrayBuffer.isView(raw)) text = new TextDecoder().decode(raw as ArrayBuffer);
    else return;
    let f: InFrame;
    try {
      f = JSON.parse(text);
    } catch {
      this.emit('error', new GatewayError('internal', `frame from the server is not JSON: ${text.slice(0, 200)}`));
      return;
    }
    if (!f || typeof f !== 'object' || typeof f.type !== 'string') return;
    switch (f.type) {
      case 'welcome':
        if (!conn.welcome) this.activate(conn, f);
        return;
      case 'disconnect':
        conn.disc = { code: String(f.code ?? ''), reason: f.reason, reconnect: f.reconnect === true };
        return;
      case 'message':
        if (conn.welcome) this.onMessage(f);
        return;
      case 'join':
      case 'leave':
        if (conn.welcome) this.onJoinLeave(f.type, f);
        return;
    }
    if (!conn.welcome) return;
    const h = f.id !== undefined ? conn.pending.get(f.id) : undefined;
    if (h) {
      conn.pending.delete(f.id as string);
      h(f);
      return;
    }
    if (f.type === 'unsubscribed' && !f.id && f.channel) {
      this.onServerUnsubscribed(f.channel, String(f.reason ?? ''));
      return;
    }
    if (f.type === 'error') {
      this.emit('error', new GatewayError(String(f.code ?? 'internal'), f.message));
    }
  }

  // activate makes conn the live connection: resubscribes every channel, sends what waited.
  private activate(conn: Conn, f: InFrame): void {
    clearTimeout(conn.handshakeTimer);
    const w: Welcome = { session: String(f.session ?? ''), node: String(f.node ?? ''), user: String(f.user ?? '') };
    if (f.data !== undefined) w.data = f.data;
    conn.welcome = w;
    conn.openedAt = Date.now();
    this.info = w;
    this.live = true;
    if (this.pingInterval > 0) {
      conn.pingTimer = setInterval(() => this.keepalive(conn), this.pingInterval);
    }
    this.setState('connected');
    if (conn !== this.conn) return;
    this.emit('welcome', { ...w });
    for (const sub of [...this.subs.values()]) {
      if (conn !== this.conn) return;
      if (sub.sentOn !== conn && this.subs.get(sub.channel) === sub) this.sendSubscribe(conn, sub);
    }
    const waiting = [...this.queue];
    this.queue.clear();
    for (const r of waiting) {
      if (conn !== this.conn) {
        this.queue.add(r);
        continue;
      }
      this.dispatch(r);
    }
  }

  private keepalive(conn: Conn): void {
    if (conn.ended) return;
    const sentAt = Date.now();
    if (!this.write(conn, { type: 'ping', id: 'keepalive' }) || conn.pongTimer !== undefined) return;
    conn.pongTimer = setTimeout(() => {
      conn.pongTimer = undefined;
      if (conn.lastRecv < sentAt) this.end(conn, `no answer to a ping within ${this.ackTimeout} ms`);
    }, this.ackTimeout);
  }

  // write sends a frame on conn; false when conn is not open.
  private write(conn: Conn, frame: Record<string, unknown>): boolean {
    if (conn.ended || conn.ws.readyState !== OPEN) return false;
    try {
      conn.ws.send(JSON.stringify(frame));
      return true;
    } catch (err) {
      // Ended after the caller undid what it had prepared for this frame.
      queueMicrotask(() => this.end(conn, `send failed: ${errText(err)}`));
      return false;
    }
  }

  // end finishes conn (once): pending replies fail, and the client reconnects unless told not to.
  private end(conn: Conn, why: string): void {
    if (conn.ended) return;
    conn.ended = true;
    const current = conn === this.conn;
    clearTimeout(conn.handshakeTimer);
    clearInterval(conn.pingTimer);
    clearTimeout(conn.pongTimer);
    const ws = conn.ws;
    ws.onmessage = ws.onclose = ws.onerror = ws.onopen = null;
    try {
      ws.close(1000);
    } catch {
      // closing or closed already
    }
    const wasLive = conn.welcome !== undefined;
    if (current && !wasLive && !conn.disc) this.transportIndex++; // the next attempt tries the next transport
    if (current) {
      this.conn = undefined;
      this.live = false;
    }
    const handlers = [...conn.pending.values()];
    conn.pending.clear();
    for (const h of handlers) h(null);
    if (this.closed || !current) return;
    const d: Disconnect = conn.disc ?? { code: wasLive ? 'connection_lost' : 'connect_failed', reason: why, reconnect: true };
    this.emit('disconnect', { ...d });
    if (this.closed) return;
    if (!d.reconnect) {
      this.shutdown(new GatewayError('closed', `disconnected by the server: ${d.code}${d.reason ? ` (${d.reason})` : ''}`));
      return;
    }
    let delay: number;
    if (conn.disc) {
      // shutdown, slow_consumer, token_expired, resubscribe: at once, spread by the jitter.
      this.attempt = 0;
      delay = Math.random() * this.minDelay;
    } else {
      if (wasLive && Date.now() - conn.openedAt >= this.maxDelay) this.attempt = 0;
      delay = this.backoff(this.attempt++);
    }
    if (wasLive) this.setState('disconnected');
    this.schedule(delay);
  }

  // shutdown closes the client for good.
  private shutdown(err: GatewayError): void {
    if (this.closed) return;
    this.closed = true;
    this.connectSeq++;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const conn = this.conn;
    if (conn) this.end(conn, 'client closed');
    for (const sub of this.subs.values()) this.settleFirst(sub, err);
    this.subs.clear();
    for (const r of [...this.requests]) this.finish(r, undefined, err);
    this.queue.clear();
    this.setState('closed');
  }

  // ---- subscriptions -----------------------------------------------------------------------

  private sendSubscribe(conn: Conn, sub: Sub): void {
    const id = this.nextID();
    const since = sub.last;
    sub.sentOn = conn;
    const frame: Record<string, unknown> = { type: 'subscribe', id, channel: sub.channel };
    if (since) frame.since = since;
    else if (sub.rewind > 0) frame.rewind = sub.rewind;
    conn.pending.set(id, (f) => this.onSubscribeReply(conn, sub, since, f));
    if (!this.write(conn, frame)) {
      conn.pending.delete(id);
      sub.sentOn = undefined; // the next connection subscribes it
      return;
    }
    if (sub.first && !sub.first.timer) {
      const first = sub.first;
      first.timer = setTimeout(() => {
        first.timer = undefined;
        if (sub.first !== first) return;
        if (this.subs.get(sub.channel) === sub) this.subs.delete(sub.channel);
        // A late `subscribed` finds the subscription gone and unsubscribes.
        this.settleFirst(sub, new GatewayError('timeout', `no answer to subscribe ${sub.channel} within ${this.ackTimeout} ms`));
      }, this.ackTimeout);
    }
  }

  private onSubscribeReply(conn: Conn, sub: Sub, since: string, f: InFrame | null): void {
    if (f === null) {
      // Connection lost before the reply: the next connection subscribes again; the wait of
      // subscribe() starts over there.
      if (sub.first?.timer) {
        clearTimeout(sub.first.timer);
        sub.first.timer = undefined;
      }
      return;
    }
    if (this.subs.get(sub.channel) !== sub) {
      // Unsubscribed (or given up) meanwhile.
      if (f.type === 'subscribed' && this.live && this.conn === conn) {
        const id = this.nextID();
        conn.pending.set(id, () => {});
        this.write(conn, { type: 'unsubscribe', id, channel: sub.channel });
      }
      return;
    }
    if (f.type === 'subscribed') {
      const pos = String(f.position ?? '');
      const cmp = comparePositions(pos, sub.last);
      if (pos && (cmp === undefined || cmp >= 0)) sub.last = pos;
      sub.recovered = f.recovered === true;
      sub.confirmed = true;
      const s: Subscribed = { channel: sub.channel, position: pos, recovered: sub.recovered };
      if (f.data !== undefined) s.data = f.data;
      if (typeof f.expires === 'number' && f.expires > 0) s.expires = f.expires;
      const first = sub.first;
      if (first) {
        sub.first = undefined;
        clearTimeout(first.timer);
        first.resolve({ ...s });
      }
      this.emit('subscribed', s);
      return;
    }
    const e =
      f.type === 'error'
        ? new GatewayError(String(f.code ?? 'internal'), f.message)
        : new GatewayError('internal', `subscribe answered by ${JSON.stringify(f.type)}`);
    if (sub.confirmed) {
      if (e.code === 'bad_request' && since) {
        // The server cannot resume from since: subscribe afresh, which says recovered:false.
        sub.last = '';
        this.sendSubscribe(conn, sub);
        return;
      }
      if (retryable(e.code) || e.code === 'internal') {
        // Try again on a new connection, after the reconnect delay.
        this.end(conn, `resubscribe ${sub.channel}: ${e.message}`);
        return;
      }
    }
    // Refused: the subscription ends.
    this.subs.delete(sub.channel);
    if (sub.first) {
      this.settleFirst(sub, e);
    } else {
      this.emit('error', new GatewayError(e.code, `resubscribe ${sub.channel} refused; the subscription ended: ${e.message}`));
    }
  }

  // onServerUnsubscribed ends the subscription the server ended on its own: it is not renewed.
  private onServerUnsubscribed(channel: string, reason: string): void {
    const sub = this.subs.get(channel);
    if (!sub) return;
    this.subs.delete(channel);
    this.settleFirst(sub, new GatewayError('closed', `unsubscribed from ${channel} by the server${reason ? `: ${reason}` : ''}`));
    const e: Unsubscribed = { channel, reason };
    this.emit('unsubscribed', e);
  }

  private settleFirst(sub: Sub, err: GatewayError): void {
    const first = sub.first;
    if (!first) return;
    sub.first = undefined;
    clearTimeout(first.timer);
    first.reject(err);
  }

  private onMessage(f: InFrame): void {
    if (f.to !== undefined || !f.channel) {
      const m: DirectMessage = { to: String(f.to ?? ''), id: String(f.id ?? ''), data: f.data };
      if (f.encoding === 'base64') m.encoding = 'base64';
      this.emit('direct', m);
      return;
    }
    const sub = this.subs.get(f.channel);
    if (!sub) return;
    const position = String(f.position ?? '');
    const id = String(f.id ?? '');
    if (!sub.accept(position, id)) return;
    const m: Message = { channel: f.channel, id, position, data: f.data };
    if (f.from) {
      m.from = String(f.from.user ?? '');
      m.fromSession = String(f.from.session ?? '');
    }
    if (f.encoding === 'base64') m.encoding = 'base64';
    this.emit('message', m);
  }

  // onJoinLeave delivers a join or leave frame: one event per member, in the frame's order (a
  // coalesced frame carries `members`, a single change `member`). Like a message, a frame at a
  // position already delivered is dropped.
  private onJoinLeave(kind: 'join' | 'leave', f: InFrame): void {
    if (!f.channel) return;
    const sub = this.subs.get(f.channel);
    if (!sub) return;
    const raw = Array.isArray(f.members) ? f.members : f.member !== undefined ? [f.member] : [];
    const members = raw.map(toMember).filter((m): m is Member => m !== undefined);
    if (members.length === 0) return;
    const position = String(f.position ?? '');
    if (!sub.accept(position, '')) return;
    for (const member of members) {
      const e: PresenceEvent = { channel: f.channel, kind, member, position };
      this.emit(kind, e);
    }
  }

  // ---- requests ----------------------------------------------------------------------------

  private nextID(): string {
    return String(++this.frameSeq);
  }

  private submit(frame: Record<string, unknown>, data: unknown, msgId: string | undefined): Promise<Ack> {
    if (this.closed) return Promise.reject(new GatewayError('closed', 'client closed'));
    let json: string | undefined;
    try {
      json = JSON.stringify(data);
    } catch (err) {
      return Promise.reject(new GatewayError('bad_request', `data cannot be encoded as JSON: ${errText(err)}`));
    }
    if (json === undefined) {
      return Promise.reject(new GatewayError('bad_request', `data cannot be encoded as JSON (${typeof data})`));
    }
    if (msgId !== undefined && (typeof msgId !== 'string' || msgId === '' || msgId.length > 64)) {
      return Promise.reject(new GatewayError('bad_request', 'msgId must be a string of 1 to 64 characters'));
    }
    const f = { ...frame, data: JSON.parse(json) as unknown, msg_id: msgId ?? newMsgID() };
    const big = this.tooLarge(f);
    if (big) return Promise.reject(big);
    return this.request(f, 'ack', this.maxAttempts).then((r) => ({
      msg_id: String(r.frame.msg_id || f.msg_id),
      attempts: r.attempts,
      ...(typeof r.frame.position === 'string' && r.frame.position !== '' ? { position: r.frame.position } : {}),
    }));
  }

  // tooLarge refuses a frame the server would close the connection for: over maxFrameSize with
  // the longest id.
  private tooLarge(f: Record<string, unknown>): GatewayError | undefined {
    if (this.maxFrameSize <= 0) return undefined;
    const n = encoder.encode(JSON.stringify({ ...f, id: '9007199254740991' })).length;
    if (n <= this.maxFrameSize) return undefined;
    return new GatewayError('too_large', `frame of ${n} bytes, over the limit of ${this.maxFrameSize}`);
  }

  // request sends frame until its reply of type expect comes (or the attempts run out). With
  // total > 0 the whole call has that long, instead of ackTimeout per attempt.
  private request(
    frame: Record<string, unknown>,
    expect: string,
    maxAttempts: number,
    lossIsSuccess = false,
    total = 0,
  ): Promise<Reply> {
    if (this.closed) return Promise.reject(new GatewayError('closed', 'client closed'));
    return new Promise<Reply>((resolve, reject) => {
      const r = new Request(frame, expect, maxAttempts, resolve, reject, lossIsSuccess);
      if (total > 0) {
        r.total = total;
        r.totalTimer = setTimeout(() => {
          r.totalTimer = undefined;
          this.finish(r, undefined, new GatewayError('timeout', `no answer to ${String(frame.type)} within ${total} ms`));
        }, total);
      }
      this.requests.add(r);
      this.dispatch(r);
    });
  }

  // dispatch sends the next attempt of r, or queues it until a connection is live.
  private dispatch(r: Request): void {
    if (r.done) return;
    const conn = this.conn;
    if (!this.live || !conn) {
      this.queue.add(r);
      return;
    }
    const id = this.nextID();
    const prev = r.current;
    // Everything is in place before the write, which may answer at once.
    conn.pending.set(id, (f) => this.onReply(r, conn, id, f));
    r.attempts++;
    r.current = { conn, id };
    clearTimeout(r.timer);
    r.timer = r.total > 0 ? undefined : setTimeout(() => this.onTimeout(r, id), this.ackTimeout);
    if (!this.write(conn, { ...r.frame, id })) {
      // Not handed over: not an attempt.
      conn.pending.delete(id);
      clearTimeout(r.timer);
      r.timer = undefined;
      r.attempts--;
      r.current = prev;
      if (!r.done) this.queue.add(r);
    }
  }

  private onTimeout(r: Request, id: string): void {
    if (r.done || r.current?.id !== id) return;
    r.timer = undefined;
    r.lastCode = 'timeout';
    r.lastWhy = `no reply within ${this.ackTimeout} ms`;
    this.retry(r);
  }

  private onReply(r: Request, conn: Conn, id: string, f: InFrame | null): void {
    if (r.done || this.closed) return;
    if (f === null) {
      // The connection ended; only the loss of the current attempt matters.
      if (r.current?.conn !== conn || r.current.id !== id) return;
      clearTimeout(r.timer);
      r.timer = undefined;
      if (r.lossIsSuccess) {
        this.finish(r, { type: r.expect });
        return;
      }
      r.lastCode = 'unavailable';
      r.lastWhy = 'connection lost before the reply';
      this.retry(r);
      return;
    }
    if (f.type === r.expect) {
      this.finish(r, f);
      return;
    }
    if (r.current?.id !== id) return; // an old attempt's refusal: the current one decides
    if (f.type === 'error') {
      const e = new GatewayError(String(f.code ?? 'internal'), f.message);
      if (r.lossIsSuccess && e.code === 'not_found') {
        this.finish(r, { type: r.expect });
        return;
      }
      if (!retryable(e.code) || r.maxAttempts === 1) {
        this.finish(r, undefined, e);
        return;
      }
      clearTimeout(r.timer);
      r.timer = undefined;
      r.lastCode = e.code;
      r.lastWhy = String(f.message ?? '');
      if (r.attempts >= r.maxAttempts) {
        this.finish(r, undefined, this.gaveUp(r));
        return;
      }
      // unavailable, rate_limited: wait before sending again.
      r.retryTimer = setTimeout(() => {
        r.retryTimer = undefined;
        this.dispatch(r);
      }, this.backoff(r.attempts));
      return;
    }
    this.finish(r, undefined, new GatewayError('internal', `${r.frame.type} answered by ${JSON.stringify(f.type)}`));
  }

  private retry(r: Request): void {
    if (r.attempts >= r.maxAttempts) {
      this.finish(r, undefined, this.gaveUp(r));
      return;
    }
    this.dispatch(r);
  }

  private gaveUp(r: Request): GatewayError {
    const n = r.attempts;
    return new GatewayError(r.lastCode, `${r.frame.type} gave up after ${n} attempt${n === 1 ? '' : 's'}; the last: ${r.lastWhy}`);
  }

  private finish(r: Request, frame: InFrame | undefined, err?: GatewayError): void {
    if (r.done) return;
    r.done = true;
    clearTimeout(r.timer);
    clearTimeout(r.retryTimer);
    clearTimeout(r.totalTimer);
    this.queue.delete(r);
    this.requests.delete(r);
    if (err || !frame) r.reject(err ?? new GatewayError('internal', 'no reply'));
    else r.resolve({ frame, attempts: r.attempts });
  }
}

// encodeData sets f.data to data as JSON; an error when data cannot be encoded.
function encodeData(f: Record<string, unknown>, data: unknown): GatewayError | undefined {
  let json: string | undefined;
  try {
    json = JSON.stringify(data);
  } catch (err) {
    return new GatewayError('bad_request', `data cannot be encoded as JSON: ${errText(err)}`);
  }
  if (json === undefined) return new GatewayError('bad_request', `data cannot be encoded as JSON (${typeof data})`);
  f.data = JSON.parse(json) as unknown;
  return undefined;
}

// callTimeout reads the timeout of rpc() and refresh(): opts.timeout, else def.
function callTimeout(opts: CallOptions | undefined, def: number): number | GatewayError {
  const t = opts?.timeout;
  if (t === undefined) return def;
  if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0) {
    return new GatewayError('bad_request', `timeout must be a number > 0, got ${String(t)}`);
  }
  return t;
}

// presenceChannelError refuses, before anything is sent, a channel that cannot have presence.
function presenceChannelError(channel: string): GatewayError | undefined {
  if (typeof channel !== 'string' || !channelPattern.test(channel)) {
    return new GatewayError('bad_request', `invalid presence channel ${JSON.stringify(channel)}: must match ${channelPattern}`);
  }
  return undefined;
}

// toMember copies a member of the wire; undefined when it has no session.
function toMember(v: unknown): Member | undefined {
  if (!v || typeof v !== 'object') return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o.session !== 'string' || o.session === '') return undefined;
  const m: Member = { user: String(o.user ?? ''), session: o.session, node: String(o.node ?? '') };
  if (o.info && typeof o.info === 'object' && !Array.isArray(o.info)) m.info = o.info as Record<string, unknown>;
  return m;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function closeText(url: string, ev: { code?: number; reason?: string } | undefined): string {
  const code = ev?.code;
  const reason = ev?.reason;
  return `${url}: closed${code ? ` with code ${code}` : ''}${reason ? ` (${reason})` : ''}`;
}
